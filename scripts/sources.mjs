// When the addon's sources last changed: a binary older than this must be rebuilt.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));

/** Newest modification time under the given paths (relative to the checkout). */
function newest(paths) {
	let latest = 0;
	for (const p of paths) {
		const full = join(root, p);
		if (!existsSync(full)) continue;
		const st = statSync(full);
		latest = Math.max(latest, st.isDirectory() ? newest(readdirSync(full).map((f) => join(p, f))) : st.mtimeMs);
	}
	return latest;
}

/** Newest modification time of the Rust sources and build files. */
export function sourcesChangedAt() {
	return newest(['src', 'Cargo.toml', 'Cargo.lock', 'build.rs', '.cargo']);
}
