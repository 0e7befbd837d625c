import sys

from tokendist.cli.app import main

sys.exit(main())
