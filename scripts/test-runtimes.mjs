// `npm run test:runtimes`: the packed package under Node, Bun and Deno. Builds the
// linux-x64 platform packages (glibc, and musl for Bun on musl) when stale, gets Bun and
// Deno from the npm registry (scripts/foreign-runtimes.mjs, cached), installs the packed
// packages plus the MCP stack (tmcp, @tmcp/transport-http, the MCP SDK client, at the
// versions this repo tests with) into a fresh project (scripts/packed-project.mjs), then
// runs __test__/runtimes with vitest and prints one summary line.
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runPreparedSuite } from './vitest-run.mjs';
import { bunAndDeno } from './foreign-runtimes.mjs';
import { buildStale, installPacked } from './packed-project.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));
const version = (name) => JSON.parse(readFileSync(join(root, 'node_modules', name, 'package.json'), 'utf8')).version;
runPreparedSuite({
	name: 'runtimes',
	vitestConfig: 'vitest.runtimes.config.mjs',
	configEnv: 'TMCP_RUNTIMES_CONFIG',
	cwd: root,
	prepare(work) {
		const platforms = ['linux-x64-gnu', 'linux-x64-musl'];
		buildStale(platforms);
		const runtimes = {
			node: { cmd: process.execPath, args: [], env: {}, describe: `Node ${process.version} (glibc)` },
			...bunAndDeno(),
		};
		const dependencies = Object.fromEntries(
			['tmcp', '@tmcp/transport-http', '@modelcontextprotocol/sdk'].map((name) => [name, version(name)]),
		);
		const project = installPacked(join(work, 'project'), { platforms, dependencies });
		copyFileSync(join(root, '__test__', 'platforms', 'roundtrip.mjs'), join(project, 'roundtrip.mjs'));
		copyFileSync(join(root, '__test__', 'runtimes', 'stack.mjs'), join(project, 'stack.mjs'));
		// The demo's server, importing the installed package instead of the checkout.
		const server = readFileSync(join(root, 'demo', 'server.mjs'), 'utf8');
		const rewritten = server.replace("from '../index.mjs'", "from '@tmcp-rs/session-manager-redis'");
		if (rewritten === server) throw new Error("demo/server.mjs no longer imports '../index.mjs'");
		writeFileSync(join(project, 'server.mjs'), rewritten);
		return { project, runtimes };
	},
});
