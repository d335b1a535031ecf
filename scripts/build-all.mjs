// `npm run build:all`: builds the binary of every platform package under npm/ on this
// machine and packs each one (dist/*.tgz). Installs what it needs when missing: the
// rustup targets, zig (PyPI's `ziglang`) and cargo-zigbuild, which links the glibc
// binaries against glibc 2.17 and the musl ones against musl.
// Usage: node scripts/build-all.mjs [platform …]   (default: all four)
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));

/** Platform package → cargo-zigbuild target (a `.2.17` suffix sets the glibc floor). */
export const PLATFORMS = {
	'linux-x64-gnu': 'x86_64-unknown-linux-gnu.2.17',
	'linux-arm64-gnu': 'aarch64-unknown-linux-gnu.2.17',
	'linux-x64-musl': 'x86_64-unknown-linux-musl',
	'linux-arm64-musl': 'aarch64-unknown-linux-musl',
};
/** Cross builds get their own target directory: `npm run build` keeps its own. */
const TARGET_DIR = join(root, 'target', 'cross');

function run(cmd, args, opts = {}) {
	const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', ...opts });
	if (r.status !== 0) {
		console.error(`build:all: \`${cmd} ${args.join(' ')}\` failed (${r.status ?? r.signal})`);
		process.exit(1);
	}
}
const ok = (cmd, args) => spawnSync(cmd, args, { stdio: 'ignore' }).status === 0;

function ensureTools(triples) {
	run('rustup', ['target', 'add', ...triples]);
	if (!ok('python3', ['-m', 'ziglang', 'version'])) {
		console.log('build:all: installing zig (PyPI ziglang)');
		run('python3', ['-m', 'pip', 'install', '--quiet', 'ziglang==0.15.2']);
	}
	if (!ok('cargo', ['zigbuild', '--help'])) {
		console.log('build:all: installing cargo-zigbuild');
		run('cargo', ['install', '--locked', 'cargo-zigbuild']);
	}
}

/** Builds one platform's binary into its npm/ package; returns its path. */
export function buildPlatform(platform) {
	const target = PLATFORMS[platform];
	const triple = target.replace(/\.2\.17$/, '');
	const env = { ...process.env, CARGO_TARGET_DIR: TARGET_DIR };
	if (triple.endsWith('musl')) {
		// A cdylib needs a dynamically linked C runtime: musl's own, as on Alpine.
		env[`CARGO_TARGET_${triple.toUpperCase().replace(/-/g, '_')}_RUSTFLAGS`] = '-C target-feature=-crt-static';
	}
	const started = Date.now();
	run('cargo', ['zigbuild', '--release', '--lib', '--target', target], { env });
	const built = join(TARGET_DIR, triple, 'release', 'libtmcp_session_manager_redis.so');
	const dest = join(root, 'npm', platform, `session-manager-redis.${platform}.node`);
	copyFileSync(built, dest);
	const seconds = ((Date.now() - started) / 1000).toFixed(0);
	console.log(`build:all: ${platform}: ${(statSync(dest).size / 1048576).toFixed(2)} MB in ${seconds} s`);
	return dest;
}

if (import.meta.url === `file://${process.argv[1]}`) {
	const wanted = process.argv.slice(2).length ? process.argv.slice(2) : Object.keys(PLATFORMS);
	for (const p of wanted) {
		if (!PLATFORMS[p]) {
			console.error(`build:all: unknown platform ${p} (known: ${Object.keys(PLATFORMS).join(', ')})`);
			process.exit(1);
		}
	}
	ensureTools(wanted.map((p) => PLATFORMS[p].replace(/\.2\.17$/, '')));
	const started = Date.now();
	mkdirSync(join(root, 'dist'), { recursive: true });
	for (const platform of wanted) {
		buildPlatform(platform);
		run('npm', ['pack', '--silent', '--pack-destination', join(root, 'dist')], { cwd: join(root, 'npm', platform) });
	}
	console.log(`build:all: ${wanted.length} platform(s) in ${((Date.now() - started) / 1000).toFixed(0)} s; tarballs in dist/`);
}
