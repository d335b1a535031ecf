// `npm run build:all`: builds the binary of every platform package under npm/ on this
// machine and packs each one (dist/*.tgz). Installs what it needs when missing: the
// rustup targets, and zig and cargo-zigbuild (both from PyPI, pinned), which link the
// glibc binaries against glibc 2.17, the musl ones against musl (dynamically: see
// .cargo/config.toml) and the macOS ones against zig's libSystem stub.
// Usage: node scripts/build-all.mjs [platform …]   (default: all six)
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));

/** Platform package → cargo-zigbuild target (a `.2.17` suffix sets the glibc floor). */
export const PLATFORMS = {
	'linux-x64-gnu': 'x86_64-unknown-linux-gnu.2.17',
	'linux-arm64-gnu': 'aarch64-unknown-linux-gnu.2.17',
	'linux-x64-musl': 'x86_64-unknown-linux-musl',
	'linux-arm64-musl': 'aarch64-unknown-linux-musl',
	'darwin-arm64': 'aarch64-apple-darwin',
	'darwin-x64': 'x86_64-apple-darwin',
};
/** The oldest macOS the darwin binaries load on (LC_BUILD_VERSION minos); Node 20+ needs 11 too. */
export const MACOS_MIN = '11.0';
const ZIG = 'ziglang==0.15.2';
const ZIGBUILD = 'cargo-zigbuild==0.24.1';
/**
 * Cross builds get their own target directory (`npm run build` keeps its own);
 * $TMCP_CROSS_TARGET_DIR puts it elsewhere, e.g. outside a CI checkout so that a fresh
 * clone reuses the compiled dependencies.
 */
const TARGET_DIR = process.env.TMCP_CROSS_TARGET_DIR || join(root, 'target', 'cross');

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
		console.log(`build:all: installing zig (PyPI ${ZIG})`);
		run('python3', ['-m', 'pip', 'install', '--quiet', ZIG]);
	}
	if (!ok('cargo', ['zigbuild', '--help'])) {
		console.log(`build:all: installing cargo-zigbuild (PyPI ${ZIGBUILD})`);
		run('python3', ['-m', 'pip', 'install', '--quiet', ZIGBUILD]);
	}
}

/**
 * Text stubs for the two Apple frameworks that `security-framework(-sys)` names in its
 * `#[link(kind = "framework")]` attributes (redis → rustls-native-certs, compiled in even
 * though the macOS build takes its roots from webpki-roots). The linker only needs them to
 * exist: no symbol of theirs is referenced (test:platforms checks it) and
 * `-dead_strip_dylibs` leaves them out of the binary. Zig ships libSystem's stub, not the
 * SDK's frameworks.
 */
function frameworkStubs() {
	const dir = join(TARGET_DIR, 'macos-framework-stubs');
	for (const name of ['Security', 'CoreFoundation']) {
		mkdirSync(join(dir, `${name}.framework`), { recursive: true });
		writeFileSync(
			join(dir, `${name}.framework`, `${name}.tbd`),
			[
				'--- !tapi-tbd',
				'tbd-version:     4',
				'targets:         [ x86_64-macos, arm64-macos ]',
				`install-name:    '/System/Library/Frameworks/${name}.framework/Versions/A/${name}'`,
				'...',
				'',
			].join('\n'),
		);
	}
	return dir;
}

/** Builds one platform's binary into its npm/ package; returns its path. */
export function buildPlatform(platform) {
	const target = PLATFORMS[platform];
	const triple = target.replace(/\.2\.17$/, '');
	const env = { ...process.env, CARGO_TARGET_DIR: TARGET_DIR };
	let args = ['zigbuild', '--release', '--lib', '--target', target];
	let built = join(TARGET_DIR, triple, 'release', 'libtmcp_session_manager_redis.so');
	if (triple.endsWith('apple-darwin')) {
		env.MACOSX_DEPLOYMENT_TARGET = MACOS_MIN;
		env[`CARGO_TARGET_${triple.toUpperCase().replace(/-/g, '_')}_RUSTFLAGS`] = [
			`-C link-arg=-F${frameworkStubs()}`,
			'-C link-arg=-Wl,-dead_strip_dylibs',
			`-C link-arg=-Wl,-install_name,@rpath/session-manager-redis.${platform}.node`,
		].join(' ');
		// The cdylib alone: with the rlib beside it rustc keeps every Rust-public symbol
		// external (the export threshold of an rlib), and zig's Mach-O linker ignores
		// rustc's exported-symbols list, so the dylib would export ~6,000 symbols and keep
		// unused code (with its Security/CoreFoundation references) alive.
		args = ['rustc', '--release', '--lib', '--target', target, '--crate-type', 'cdylib'];
		built = join(TARGET_DIR, triple, 'release', 'libtmcp_session_manager_redis.dylib');
	}
	const started = Date.now();
	if (args[0] === 'rustc') run('cargo-zigbuild', args, { env });
	else run('cargo', args, { env });
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
