// A rolling deploy of our own processes (issue 29): the client of a session reconnects
// to a new process, which re-creates the session, before the old process shuts down.
import { expect } from 'vitest';
import { RedisStreamSessionManager } from '../../index.mjs';
import { spawnPeer } from './peer.mjs';
import { eventually } from './redis.mjs';

const TTL = 3;

/**
 * Old process A holds `id`; new process B re-creates it; A closes. B must keep the
 * session: `has` true from every process, B's stream open and receiving for longer than
 * two TTLs (the liveness timer would have closed it by then had A's close removed the
 * key). Then the reverse order (C closes first, B creates after) works as before.
 * @param {string} url @param {object} options manager options (cluster seeds etc.)
 * @param {(p: Awaited<ReturnType<typeof spawnPeer>>) => void} track kills the peers after
 */
export async function rollingDeployKeepsSessions(url, options, id, track) {
	const opts = { ...options, sessionTtlSeconds: TTL };
	const a = await spawnPeer('ours', url, opts);
	track(a);
	const b = await spawnPeer('ours', url, opts);
	track(b);
	const sender = new RedisStreamSessionManager(url, opts);
	try {
		await a.request('create', { session: id });
		await b.request('create', { session: id });
		await a.request('close');
		expect(await sender.has(id)).toBe(true);
		expect(await b.request('streams', { method: 'has', args: [id] })).toBe(true);

		// Longer than two TTLs, with a message each second: every one reaches B.
		const started = Date.now();
		let sent = 0;
		while (Date.now() - started < (2 * TTL + 1.5) * 1000) {
			const text = `m${sent++}`;
			await sender.send([id], text);
			await eventually(async () => (await b.request('received', { session: id })).chunks.includes(text), 5000, `${text} at B`);
			await new Promise((r) => setTimeout(r, 1000));
		}
		const atB = await b.request('received', { session: id });
		expect(atB.closed).toBe(false);
		expect(atB.chunks).toEqual(Array.from({ length: sent }, (_, i) => `m${i}`));
		expect(await sender.has(id)).toBe(true);

		// The reverse order: C closes first, then B creates.
		const reverse = `${id}-reverse`;
		const c = await spawnPeer('ours', url, opts);
		track(c);
		await c.request('create', { session: reverse });
		await c.request('close');
		expect(await sender.has(reverse)).toBe(false);
		await b.request('create', { session: reverse });
		expect(await sender.has(reverse)).toBe(true);
		await sender.send([reverse], 'after');
		await eventually(async () => (await b.request('received', { session: reverse })).chunks.includes('after'), 5000, 'delivery at B');

		expect(await b.request('failures')).toEqual([]);
		expect(b.events.filter((e) => e.event === 'onError').map((e) => e.error)).toEqual([]);
	} finally {
		await sender.close();
	}
}
