import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';

const { PendingCalls } = createRequire(import.meta.url)('../lib/link.js');

// The table of calls awaiting their answer (lib/link.js): ids are slots plus a reuse tag.
describe('pending calls', () => {
	const file = (pending, name) => pending.add(() => {}, () => {}, name);

	it('gives pending calls distinct small-integer ids and finds each once', () => {
		const pending = new PendingCalls();
		const ids = Array.from({ length: 1000 }, (_, i) => file(pending, `c${i}`));
		expect(new Set(ids).size).toBe(1000);
		for (const id of ids) expect(Number.isInteger(id) && id > 0 && id < 2 ** 29).toBe(true);
		expect(pending.size).toBe(1000);
		expect(pending.take(ids[10]).what).toBe('c10');
		expect(pending.take(ids[10])).toBeUndefined();
		expect(pending.size).toBe(999);
	});

	it('an answer for a settled call never settles the call that reuses its slot', () => {
		const pending = new PendingCalls();
		const first = file(pending, 'first');
		pending.take(first);
		const second = file(pending, 'second');
		expect(second).not.toBe(first);
		expect(pending.take(first)).toBeUndefined();
		expect(pending.take(second).what).toBe('second');
		expect(pending.take(0)).toBeUndefined();
		expect(pending.size).toBe(0);
	});

	it('a full table files nothing (id 0) until a call settles', () => {
		const pending = new PendingCalls(2);
		const [a, b] = [file(pending, 'a'), file(pending, 'b')];
		expect(file(pending, 'c')).toBe(0);
		expect(pending.size).toBe(2);
		pending.take(a);
		const d = file(pending, 'd');
		expect(d).not.toBe(0);
		expect(pending.take(d).what).toBe('d');
		expect(pending.take(b).what).toBe('b');
	});
});
