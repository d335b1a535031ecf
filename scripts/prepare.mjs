// Makes a fresh checkout ready to run: npm dependencies, a redis-server binary (from
// the OS packages when missing) and an up-to-date release build of the addon.
// Usage: node scripts/prepare.mjs [--no-redis] [--no-addon]
// (--no-addon: no build of lib/'s addon, for the commands that test the platform packages)
import { spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sourcesChangedAt } from './sources.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));
const run = (cmd, args, opts = {}) => {
	const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', ...opts });
	if (r.status !== 0) {
		console.error(`prepare: \`${cmd} ${args.join(' ')}\` failed (${r.status ?? r.signal})`);
		process.exit(1);
	}
};
const has = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;

if (!existsSync(join(root, 'node_modules/.package-lock.json'))) {
	console.log('prepare: installing npm dependencies');
	// `npm install`, not `npm ci`: the lock file cannot list our own platform package, which is
	// built here rather than fetched.
	run('npm', ['install', '--no-audit', '--no-fund']);
}

if (!process.argv.includes('--no-redis') && !process.env.REDIS_URL && !has('redis-server')) {
	console.log('prepare: redis-server is missing; installing it from the OS packages');
	const sudo = process.getuid?.() === 0 ? [] : ['sudo'];
	const apt = (args) => run(sudo[0] ?? 'apt-get', [...sudo.slice(1), ...(sudo.length ? ['apt-get'] : []), ...args], {
		env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
	});
	apt(['update', '-q']);
	apt(['install', '-y', '-q', 'redis-server']);
}

const binary = join(root, 'lib', 'session-manager-redis.linux-x64-gnu.node');
const sources = sourcesChangedAt();
if (process.argv.includes('--no-addon')) {
	// test:platforms and test:runtimes use the platform packages' own builds.
} else if (!existsSync(binary) || statSync(binary).mtimeMs < sources) {
	console.log('prepare: building the native addon (release)');
	run('npm', ['run', 'build']);
} else {
	console.log('prepare: native addon is up to date');
}
