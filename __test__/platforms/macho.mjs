// What test:platforms checks of a macOS binary without a Mac: a small reader of 64-bit
// Mach-O dylibs (header, load commands, symbol table) and of the text stubs (.tbd) zig
// ships for libSystem.
import { readFileSync } from 'node:fs';

const MH_MAGIC_64 = 0xfeedfacf;
export const CPU = { arm64: 0x0100000c, x64: 0x01000007 };
export const MH_DYLIB = 6;
const LC = {
	SYMTAB: 0x2,
	LOAD_DYLIB: 0xc,
	ID_DYLIB: 0xd,
	LAZY_LOAD_DYLIB: 0x20,
	VERSION_MIN_MACOSX: 0x24,
	BUILD_VERSION: 0x32,
	LOAD_WEAK_DYLIB: 0x80000018,
	REEXPORT_DYLIB: 0x8000001f,
	LOAD_UPWARD_DYLIB: 0x80000023,
	DYLD_INFO: 0x22,
	DYLD_INFO_ONLY: 0x80000022,
	DYLD_CHAINED_FIXUPS: 0x80000034,
};
const DYLIB_COMMANDS = new Set([LC.LOAD_DYLIB, LC.LAZY_LOAD_DYLIB, LC.LOAD_WEAK_DYLIB, LC.REEXPORT_DYLIB, LC.LOAD_UPWARD_DYLIB]);
/** Where dyld looks a bound symbol up: a dylib's ordinal (1 = the first LC_LOAD_DYLIB) or one of these. */
export const BIND = { SELF: 0, MAIN_EXECUTABLE: -1, FLAT_LOOKUP: -2, WEAK_LOOKUP: -3 };
const PLATFORM_MACOS = 1;

const version = (v) => `${v >>> 16}.${(v >>> 8) & 0xff}${v & 0xff ? `.${v & 0xff}` : ''}`;
const cstring = (buf, at) => buf.toString('latin1', at, buf.indexOf(0, at));

/**
 * @param {string} file
 * @returns {{ cputype: number, filetype: number, id?: string, dylibs: string[],
 *   minMacos?: string, sdk?: string, platform?: number,
 *   exports: string[], undefined: string[], binds: Map<string, Set<number>>,
 *   chainedFixups: boolean }}
 */
export function readMachO(file) {
	const buf = readFileSync(file);
	if (buf.readUInt32LE(0) !== MH_MAGIC_64) throw new Error(`${file}: not a 64-bit little-endian Mach-O file`);
	const out = {
		cputype: buf.readUInt32LE(4),
		filetype: buf.readUInt32LE(12),
		dylibs: [],
		exports: [],
		undefined: [],
		binds: new Map(),
		chainedFixups: false,
	};
	const ncmds = buf.readUInt32LE(16);
	let symtab;
	const bindStreams = [];
	for (let i = 0, at = 32; i < ncmds; i++) {
		const cmd = buf.readUInt32LE(at);
		const size = buf.readUInt32LE(at + 4);
		if (DYLIB_COMMANDS.has(cmd)) out.dylibs.push(cstring(buf, at + buf.readUInt32LE(at + 8)));
		else if (cmd === LC.ID_DYLIB) out.id = cstring(buf, at + buf.readUInt32LE(at + 8));
		else if (cmd === LC.BUILD_VERSION) {
			out.platform = buf.readUInt32LE(at + 8);
			out.minMacos = version(buf.readUInt32LE(at + 12));
			out.sdk = version(buf.readUInt32LE(at + 16));
		} else if (cmd === LC.VERSION_MIN_MACOSX) {
			out.platform = PLATFORM_MACOS;
			out.minMacos = version(buf.readUInt32LE(at + 8));
			out.sdk = version(buf.readUInt32LE(at + 12));
		} else if (cmd === LC.DYLD_INFO || cmd === LC.DYLD_INFO_ONLY) {
			// bind, weak bind (names only) and lazy bind opcode streams
			for (const field of [16, 32, 24]) bindStreams.push([buf.readUInt32LE(at + field), buf.readUInt32LE(at + field + 4)]);
		} else if (cmd === LC.DYLD_CHAINED_FIXUPS) {
			out.chainedFixups = true;
		} else if (cmd === LC.SYMTAB) {
			symtab = { symoff: buf.readUInt32LE(at + 8), nsyms: buf.readUInt32LE(at + 12), stroff: buf.readUInt32LE(at + 16) };
		}
		at += size;
	}
	if (symtab) {
		for (let i = 0; i < symtab.nsyms; i++) {
			const at = symtab.symoff + i * 16;
			const type = buf.readUInt8(at + 4);
			if (type & 0xe0) continue; // a debugging (stab) entry
			const external = (type & 0x01) !== 0;
			const privateExternal = (type & 0x10) !== 0;
			const kind = type & 0x0e;
			const name = cstring(buf, symtab.stroff + buf.readUInt32LE(at));
			if (kind === 0x0 && external) {
				out.undefined.push(name);
			} else if (kind === 0xe && external && !privateExternal) {
				out.exports.push(name);
			}
		}
	}
	for (const [offset, size] of bindStreams) readBinds(buf, offset, size, out.binds);
	return out;
}

/** Runs a dyld bind opcode stream, recording the library ordinal each symbol is bound with. */
function readBinds(buf, offset, size, binds) {
	let at = offset;
	const end = offset + size;
	const uleb = () => {
		let value = 0;
		let shift = 0;
		let byte;
		do {
			byte = buf[at++];
			value += (byte & 0x7f) * 2 ** shift;
			shift += 7;
		} while (byte & 0x80);
		return value;
	};
	let ordinal = 0;
	let symbol;
	const bind = () => {
		if (symbol === undefined) return;
		if (!binds.has(symbol)) binds.set(symbol, new Set());
		binds.get(symbol).add(ordinal);
	};
	while (at < end) {
		const byte = buf[at++];
		const op = byte & 0xf0;
		const imm = byte & 0x0f;
		switch (op) {
			case 0x00: // DONE (lazy streams put one after each symbol)
				break;
			case 0x10: ordinal = imm; break;
			case 0x20: ordinal = uleb(); break;
			case 0x30: ordinal = imm === 0 ? 0 : (imm | 0xf0) << 24 >> 24; break;
			case 0x40: {
				const stop = buf.indexOf(0, at);
				symbol = buf.toString('latin1', at, stop);
				at = stop + 1;
				break;
			}
			case 0x50: break; // type
			case 0x60: uleb(); break; // addend (SLEB: only its length matters here)
			case 0x70: uleb(); break; // segment and offset
			case 0x80: uleb(); break; // add address
			case 0x90: bind(); break;
			case 0xa0: bind(); uleb(); break;
			case 0xb0: bind(); break;
			case 0xc0: bind(); uleb(); uleb(); break;
			default:
				throw new Error(`unknown bind opcode 0x${byte.toString(16)} at ${at - 1}`);
		}
	}
}

export const isMacos = (m) => m.platform === PLATFORM_MACOS;

/**
 * The symbols a text-based stub (.tbd, version 4) exports for one target (e.g.
 * `arm64-macos`), over every document in the file (libSystem's stub also holds the
 * libraries it re-exports: libsystem_c, libsystem_kernel, libdyld, …).
 * @param {string} file
 * @param {string} target
 */
export function tbdExports(file, target) {
	const symbols = new Set();
	let section = '';
	let targets = [];
	let list = null; // the key whose [ … ] list is being read, across lines
	let text = '';
	for (const line of readFileSync(file, 'utf8').split('\n')) {
		if (list) {
			text += ` ${line}`;
		} else {
			const top = /^([a-z-]+):/.exec(line);
			if (top) section = top[1];
			const item = /^\s*-?\s*(targets|symbols|weak-symbols|thread-local-symbols):\s*(.*)$/.exec(line);
			if (!item) continue;
			list = item[1];
			text = item[2];
		}
		if (!text.includes(']')) continue;
		const names = text
			.slice(text.indexOf('[') + 1, text.lastIndexOf(']'))
			.split(',')
			.map((s) => s.trim().replace(/^'(.*)'$/, '$1'))
			.filter(Boolean);
		if (list === 'targets') targets = names;
		else if ((section === 'exports' || section === 'reexports') && targets.includes(target)) names.forEach((n) => symbols.add(n));
		list = null;
	}
	return symbols;
}
