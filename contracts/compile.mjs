#!/usr/bin/env node
// Offline, reproducible compile of the contracts tokendist deploys, with solc-js
// versions pinned in contracts/package.json (each compiler is bundled in its npm
// package: nothing is downloaded at run time). Imports resolve from
// contracts/node_modules only, where `npm ci` puts the exact versions
// package-lock.json pins.
//
// Two compilation units, because they need different compilers and OpenZeppelins:
//  - ours (contracts/src): solc 0.8.28, OpenZeppelin 5.x;
//  - ERC-3643 (T-REX by Tokeny, npm @tokenysolutions/t-rex, and ONCHAINID, npm
//    @onchain-id/solidity): their sources pin `pragma solidity 0.8.17` and import
//    OpenZeppelin 4.8 as "@openzeppelin/contracts/...", which a remapping sends to the
//    npm alias @openzeppelin/contracts-v4 (the v5 package keeps the plain name).
//
//   node contracts/compile.mjs          write tokendist/consumer/abi/<Name>.json (package data)
//   node contracts/compile.mjs --check  compile in memory; exit 1 if the
//                                       committed build files differ
import { readFileSync, writeFileSync, mkdirSync, existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);

const ROOT = dirname(fileURLToPath(import.meta.url));
const SRC_DIR = join(ROOT, 'src');
const BUILD_DIR = join(ROOT, '..', 'tokendist', 'consumer', 'abi');
const NODE_MODULES = join(ROOT, 'node_modules');
const TREX = '@tokenysolutions/t-rex/contracts/';
const OID = '@onchain-id/solidity/contracts/';

function packageVersion(name) {
  return JSON.parse(readFileSync(join(NODE_MODULES, name, 'package.json'), 'utf8')).version;
}

const UNITS = [
  {
    solc: 'solc',
    // Contract name -> source (relative to src/). Order is the output order.
    contracts: {
      PropertyToken: 'PropertyToken.sol',
      Distributor: 'Distributor.sol',
    },
    readSource: (file) => readFileSync(join(SRC_DIR, file), 'utf8'),
    // cancun: PUSH0 and transient storage (ReentrancyGuardTransient); anvil's default
    // hardfork (latest) runs it, and so do the L2s the project targets.
    evmVersion: 'cancun',
    // The Distributor's batch loop runs thousands of times per deployment: favour run
    // cost over code size.
    optimizerRuns: 10000,
    remappings: [],
    provenance: () => ({ openzeppelinVersion: packageVersion('@openzeppelin/contracts') }),
  },
  {
    solc: 'solc-0.8.17',
    contracts: {
      Token: TREX + 'token/Token.sol',
      IdentityRegistry: TREX + 'registry/implementation/IdentityRegistry.sol',
      IdentityRegistryStorage: TREX + 'registry/implementation/IdentityRegistryStorage.sol',
      TrustedIssuersRegistry: TREX + 'registry/implementation/TrustedIssuersRegistry.sol',
      ClaimTopicsRegistry: TREX + 'registry/implementation/ClaimTopicsRegistry.sol',
      ModularCompliance: TREX + 'compliance/modular/ModularCompliance.sol',
      CountryRestrictModule: TREX + 'compliance/modular/modules/CountryRestrictModule.sol',
      Identity: OID + 'Identity.sol',
      ClaimIssuer: OID + 'ClaimIssuer.sol',
      ImplementationAuthority: OID + 'proxy/ImplementationAuthority.sol',
      IdFactory: OID + 'factory/IdFactory.sol',
    },
    readSource: (file) => readFileSync(join(NODE_MODULES, file), 'utf8'),
    // solc 0.8.17 knows no later EVM than london; T-REX's own build uses 200 runs, and
    // more would push Token past the 24 KiB code size limit.
    evmVersion: 'london',
    optimizerRuns: 200,
    remappings: ['@openzeppelin/contracts/=@openzeppelin/contracts-v4/'],
    provenance: () => ({
      trexVersion: packageVersion('@tokenysolutions/t-rex'),
      onchainidVersion: packageVersion('@onchain-id/solidity'),
      openzeppelinVersion: packageVersion('@openzeppelin/contracts-v4'),
    }),
  },
];

// Only package imports, only from node_modules: a missing package fails the build
// instead of being looked up anywhere else.
function findImports(path) {
  const file = join(NODE_MODULES, path);
  if (!path.startsWith('@') || !file.startsWith(NODE_MODULES + '/') || !existsSync(file)) {
    return { error: `import ${path} not found in contracts/node_modules (run npm ci)` };
  }
  return { contents: readFileSync(file, 'utf8') };
}

function buildInput(unit) {
  const sources = {};
  for (const file of new Set(Object.values(unit.contracts))) {
    sources[file] = { content: unit.readSource(file) };
  }
  return {
    language: 'Solidity',
    sources,
    settings: {
      optimizer: { enabled: true, runs: unit.optimizerRuns },
      evmVersion: unit.evmVersion,
      remappings: unit.remappings,
      outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object'] } },
    },
  };
}

// Our own sources' warnings are shown; the pinned packages' warnings are known and not
// ours to fix.
function isOurs(file) {
  return !file.startsWith('@');
}

function compileUnit(unit) {
  const solc = require(unit.solc);
  const output = JSON.parse(solc.compile(JSON.stringify(buildInput(unit)), { import: findImports }));
  const problems = output.errors || [];
  for (const p of problems) {
    const file = p.sourceLocation?.file ?? '';
    if (p.severity !== 'error' && !isOurs(file)) continue;
    process.stderr.write((p.formattedMessage || p.message) + '\n');
  }
  if (problems.some((p) => p.severity === 'error')) {
    throw new Error(`solc ${solc.version()} reported errors`);
  }

  const solcVersion = solc.version();
  const artifacts = {};
  for (const [name, file] of Object.entries(unit.contracts)) {
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
      ...unit.provenance(),
      evmVersion: unit.evmVersion,
      optimizerRuns: unit.optimizerRuns,
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

  const artifacts = {};
  const versions = [];
  for (const unit of UNITS) {
    const built = compileUnit(unit);
    Object.assign(artifacts, built.artifacts);
    versions.push(built.solcVersion);
  }

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
    process.stdout.write(`build artifacts up to date (solc ${versions.join(', ')})\n`);
    return 0;
  }

  mkdirSync(BUILD_DIR, { recursive: true });
  for (const [name, text] of Object.entries(artifacts)) {
    const path = join(BUILD_DIR, `${name}.json`);
    writeFileSync(path, text);
    process.stdout.write(`wrote ${path}\n`);
  }
  for (const unit of UNITS) {
    const p = unit.provenance();
    process.stdout.write(
      `${Object.keys(unit.contracts).join(', ')}: ${JSON.stringify(p)}, optimizer ${unit.optimizerRuns} runs, evm ${unit.evmVersion}\n`,
    );
  }
  return 0;
}

try {
  process.exitCode = main(process.argv.slice(2));
} catch (err) {
  process.stderr.write(`compile failed: ${err.message}\n`);
  process.exitCode = 1;
}
