#!/usr/bin/env node
// Offline, reproducible compile of contracts/src/*.sol with the solc-js
// version pinned in contracts/package.json (the compiler is bundled in the
// npm package: nothing is downloaded at run time).
//
//   node contracts/compile.mjs          write tokendist/consumer/abi/<Name>.json (package data)
//   node contracts/compile.mjs --check  compile in memory; exit 1 if the
//                                       committed build files differ
import { readFileSync, writeFileSync, mkdirSync, existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const solc = require('solc');

const ROOT = dirname(fileURLToPath(import.meta.url));
const SRC_DIR = join(ROOT, 'src');
const BUILD_DIR = join(ROOT, '..', 'tokendist', 'consumer', 'abi');

// Contract name -> source file (relative to src/). Order is the output order.
const CONTRACTS = {
  PropertyToken: 'PropertyToken.sol',
  Distributor: 'Distributor.sol',
};

const EVM_VERSION = 'paris';

function buildInput() {
  const sources = {};
  for (const file of new Set(Object.values(CONTRACTS))) {
    sources[file] = { content: readFileSync(join(SRC_DIR, file), 'utf8') };
  }
  return {
    language: 'Solidity',
    sources,
    settings: {
      optimizer: { enabled: true, runs: 200 },
      evmVersion: EVM_VERSION,
      outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object'] } },
    },
  };
}

function compile() {
  const output = JSON.parse(solc.compile(JSON.stringify(buildInput())));
  const problems = output.errors || [];
  for (const p of problems) {
    process.stderr.write((p.formattedMessage || p.message) + '\n');
  }
  if (problems.some((p) => p.severity === 'error')) {
    throw new Error('solc reported errors');
  }

  const solcVersion = solc.version();
  const artifacts = {};
  for (const [name, file] of Object.entries(CONTRACTS)) {
    const c = output.contracts?.[file]?.[name];
    if (!c) throw new Error(`no output for ${file}:${name}`);
    const bytecode = c.evm.bytecode.object;
    if (!bytecode) throw new Error(`${name}: empty bytecode`);
    // Fixed key order; trailing newline.
    const artifact = {
      contractName: name,
      abi: c.abi,
      bytecode: '0x' + bytecode,
      solcVersion,
    };
    artifacts[name] = JSON.stringify(artifact, null, 2) + '\n';
  }
  return { solcVersion, artifacts };
}

function main(argv) {
  const check = argv.includes('--check');
  const unknown = argv.filter((a) => a !== '--check');
  if (unknown.length) {
    process.stderr.write(`usage: node compile.mjs [--check]\n`);
    return 2;
  }

  const { solcVersion, artifacts } = compile();

  if (check) {
    const stale = [];
    for (const [name, text] of Object.entries(artifacts)) {
      const path = join(BUILD_DIR, `${name}.json`);
      if (!existsSync(path) || readFileSync(path, 'utf8') !== text) stale.push(path);
    }
    if (stale.length) {
      process.stderr.write(
        `build artifacts out of date (run: node contracts/compile.mjs):\n` +
          stale.map((p) => `  ${p}\n`).join(''),
      );
      return 1;
    }
    process.stdout.write(`build artifacts up to date (solc ${solcVersion})\n`);
    return 0;
  }

  mkdirSync(BUILD_DIR, { recursive: true });
  for (const [name, text] of Object.entries(artifacts)) {
    const path = join(BUILD_DIR, `${name}.json`);
    writeFileSync(path, text);
    process.stdout.write(`wrote ${path}\n`);
  }
  process.stdout.write(`solc ${solcVersion}, optimizer 200 runs, evm ${EVM_VERSION}\n`);
  return 0;
}

try {
  process.exitCode = main(process.argv.slice(2));
} catch (err) {
  process.stderr.write(`compile failed: ${err.message}\n`);
  process.exitCode = 1;
}
