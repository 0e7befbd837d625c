#!/usr/bin/env node
// Offline, reproducible compile of contracts/src/*.sol with the solc-js
// version pinned in contracts/package.json (the compiler is bundled in the
// npm package: nothing is downloaded at run time). Imports such as
// "@openzeppelin/contracts/..." resolve from contracts/node_modules only, where
// `npm ci` puts the exact version package-lock.json pins.
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

// cancun: PUSH0 and transient storage (ReentrancyGuardTransient); anvil's default
// hardfork (latest) runs it, and so do the L2s the project targets.
const EVM_VERSION = 'cancun';
// The Distributor's batch loop runs thousands of times per deployment: favour run
// cost over code size.
const OPTIMIZER_RUNS = 10000;
const NODE_MODULES = join(ROOT, 'node_modules');

function openzeppelinVersion() {
  const pkg = join(NODE_MODULES, '@openzeppelin', 'contracts', 'package.json');
  return JSON.parse(readFileSync(pkg, 'utf8')).version;
}

// Only package imports, only from node_modules: a missing package fails the build
// instead of being looked up anywhere else.
function findImports(path) {
  const file = join(NODE_MODULES, path);
  if (!path.startsWith('@') || !file.startsWith(NODE_MODULES + '/') || !existsSync(file)) {
    return { error: `import ${path} not found in contracts/node_modules (run npm ci)` };
  }
  return { contents: readFileSync(file, 'utf8') };
}

function buildInput() {
  const sources = {};
  for (const file of new Set(Object.values(CONTRACTS))) {
    sources[file] = { content: readFileSync(join(SRC_DIR, file), 'utf8') };
  }
  return {
    language: 'Solidity',
    sources,
    settings: {
      optimizer: { enabled: true, runs: OPTIMIZER_RUNS },
      evmVersion: EVM_VERSION,
      outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object'] } },
    },
  };
}

function compile() {
  const output = JSON.parse(solc.compile(JSON.stringify(buildInput()), { import: findImports }));
  const problems = output.errors || [];
  for (const p of problems) {
    // The pinned OpenZeppelin sources' warnings (transient storage in its
    // ReentrancyGuardTransient) are known and not ours to fix: show only our own.
    const file = p.sourceLocation?.file ?? '';
    if (p.severity !== 'error' && file.startsWith('@openzeppelin/')) continue;
    process.stderr.write((p.formattedMessage || p.message) + '\n');
  }
  if (problems.some((p) => p.severity === 'error')) {
    throw new Error('solc reported errors');
  }

  const solcVersion = solc.version();
  const ozVersion = openzeppelinVersion();
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
      openzeppelinVersion: ozVersion,
      evmVersion: EVM_VERSION,
      optimizerRuns: OPTIMIZER_RUNS,
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
  process.stdout.write(
    `solc ${solcVersion}, OpenZeppelin ${openzeppelinVersion()}, optimizer ${OPTIMIZER_RUNS} runs, evm ${EVM_VERSION}\n`,
  );
  return 0;
}

try {
  process.exitCode = main(process.argv.slice(2));
} catch (err) {
  process.stderr.write(`compile failed: ${err.message}\n`);
  process.exitCode = 1;
}
