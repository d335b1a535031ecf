// A Redis Cluster over TLS (rediss://): the seed URL's TLS settings apply to every node the
// cluster client finds, certificates are verified, and a wrong CA fails clearly. A private
// cluster of three TLS masters, with a CA and a server certificate made by openssl at run
// time.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisInfoSessionManager, RedisStreamSessionManager } from '../index.mjs';
import { slotOf, startCluster } from './helpers/cluster.mjs';
import { eventually, recorder } from './helpers/redis.mjs';
import { makeCertificates } from './helpers/tls.mjs';
import { failOnUnhandledRejections } from './helpers/unhandled.mjs';

failOnUnhandledRejections();
let certs;
let cluster;
let ca;
let otherCa;

beforeAll(async () => {
	certs = makeCertificates();
	({ ca, otherCa } = certs);
	cluster = await startCluster({ replicas: 0, tls: certs.files });
}, 60_000);

afterAll(async () => {
	await cluster?.stop();
	certs?.remove();
});

describe('Redis Cluster over TLS', () => {
	it('runs sessions on every master and info over rediss://, with the given CA', async () => {
		const options = { cluster: true, tls: { ca }, commandTimeout: 3000 };
		const streams = new RedisStreamSessionManager(cluster.url, options);
		const info = new RedisInfoSessionManager(cluster.url, options);
		try {
			// Ids whose channels hash to slots of all three masters.
			const owners = new Map();
			for (let i = 0; owners.size < 3; i++) {
				const owner = await cluster.ownerOf(slotOf(`session:t${i}`));
				if (!owners.has(owner)) owners.set(owner, `t${i}`);
			}
			const recs = new Map();
			for (const id of owners.values()) {
				const rec = recorder();
				recs.set(id, rec);
				await streams.create(id, rec);
			}
			await streams.send([...owners.values()], 'over tls');
			for (const rec of recs.values()) await eventually(() => rec.chunks.includes('over tls'), 5000, 'delivery');
			await info.setClientInfo('t0', { name: 'tls', version: '1' });
			expect(await info.getClientInfo('t0')).toEqual({ name: 'tls', version: '1' });
		} finally {
			await streams.close();
			await info.close();
		}
	});

	it('a CA that did not sign the nodes\' certificate: calls reject clearly, nothing hangs', async () => {
		const info = new RedisInfoSessionManager(cluster.url, { cluster: true, tls: { ca: otherCa }, commandTimeout: 2000, connectTimeout: 1000 });
		try {
			const error = await info.getClientInfo('x').catch((e) => e);
			expect(error).toBeInstanceOf(Error);
			// redis-rs alone says "No connections found"; the seed's own error says why.
			expect(error.message).toMatch(/Could not read session info for session x: .*no node of the Redis Cluster could be reached: TLS handshake with Redis failed/);
		} finally {
			await info.close();
		}
	});
});
