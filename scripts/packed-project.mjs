// A fresh project that installed the packed packages, as a user's would: `npm pack` of
// the main package plus the platform tarballs that `npm run build:all` left in dist/,
// installed with pnpm (the repo's own) with every Linux and macOS platform package
// allowed (`supportedArchitectures`), so each runtime's loader finds its own binary
// among them. Used by `npm run test:platforms` and `npm run test:runtimes`.
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, statSync } from 'node:fs';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sourcesChangedAt } from './sources.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));
const VERSION = '0.1.0';
export const tarballName = (platform) => `tmcp-rs-session-manager-redis-${platform}-${VERSION}.tgz`;

function run(cmd, args, opts = {}) {
	const r = spawnSync(cmd, args, { cwd: root, encoding: 'utf8', ...opts });
	if (r.status !== 0) throw new Error(`\`${cmd} ${args.join(' ')}\` failed (${r.status ?? r.signal}):\n${r.stdout}${r.stderr}`);
	return r.stdout;
}

/** Platform packages whose binary or tarball is missing or older than the Rust sources. */
export function stalePlatforms(platforms) {
	const sources = sourcesChangedAt();
	return platforms.filter((p) => {
		const file = join(root, 'npm', p, `session-manager-redis.${p}.node`);
		const tarball = join(root, 'dist', tarballName(p));
		return !existsSync(file) || statSync(file).mtimeMs < sources || !existsSync(tarball) || statSync(tarball).mtimeMs < statSync(file).mtimeMs;
	});
}

/** Builds (scripts/build-all.mjs) the platform packages that are stale. */
export function buildStale(platforms) {
	const stale = stalePlatforms(platforms);
	if (!stale.length) return;
	const r = spawnSync(process.execPath, [join(root, 'scripts', 'build-all.mjs'), ...stale], { cwd: root, stdio: 'inherit' });
	if (r.status !== 0) throw new Error(`build:all ${stale.join(' ')} failed`);
}

/**
 * Installs the packed main package and the given platform tarballs into `dir`, plus
 * `dependencies` from the registry; returns `dir`.
 * @param {string} dir
 * @param {{ platforms: string[], dependencies?: Record<string, string> }} options
 */
export function installPacked(dir, { platforms, dependencies = {} }) {
	mkdirSync(join(dir, 'tarballs'), { recursive: true });
	const main = run('npm', ['pack', '--silent', '--pack-destination', join(dir, 'tarballs')]).trim().split('\n').pop();
	const overrides = {};
	for (const p of platforms) {
		// A copy at a path of this project's own: pnpm never takes a stale one from its store.
		copyFileSync(join(root, 'dist', tarballName(p)), join(dir, 'tarballs', tarballName(p)));
		overrides[`@tmcp-rs/session-manager-redis-${p}`] = `file:./tarballs/${tarballName(p)}`;
	}
	writeFileSync(
		join(dir, 'package.json'),
		`${JSON.stringify(
			{
				name: 'tmcp-rs-packed-check',
				private: true,
				type: 'module',
				dependencies: { '@tmcp-rs/session-manager-redis': `file:./tarballs/${main}`, ...dependencies },
			},
			null,
			2,
		)}\n`,
	);
	writeFileSync(
		join(dir, 'pnpm-workspace.yaml'),
		[
			'overrides:',
			...Object.entries(overrides).map(([name, spec]) => `  '${name}': '${spec}'`),
			'supportedArchitectures:',
			'  os: [linux, darwin]',
			'  cpu: [x64, arm64]',
			'  libc: [glibc, musl]',
			'',
		].join('\n'),
	);
	run(join(root, 'node_modules', '.bin', 'pnpm'), ['install', '--prefer-offline', '--reporter=append-only', '--config.confirmModulesPurge=false'], {
		cwd: dir,
		env: { ...process.env, PATH: `${join(root, 'node_modules', '.bin')}:${process.env.PATH}` },
	});
	return dir;
}
