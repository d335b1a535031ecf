// Redis Cluster: sharded session channels, per-slot pipelines, and recovery from a manual
// failover, a killed master and a live slot migration, against a private cluster of six
// real redis-server processes (three masters, three replicas) on free loopback ports.
import dc from 'node:diagnostics_channel';
import { inspect } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
	RedisInfoSessionManager,
	RedisStreamSessionManager,
	RedisSubscriptionManager,
	CHANNELS,
	createSessionManagers,
} from '../index.mjs';
import { nodeClient, onNode, slotOf, startCluster } from './helpers/cluster.mjs';
import { spawnPeer } from './helpers/peer.mjs';
import { rollingDeployKeepsSessions } from './helpers/rolling.mjs';
import { deliveryResumes, eventually, freePort, recorder, until } from './helpers/redis.mjs';
import { roundTrip } from './helpers/roundtrip.mjs';
import { useCleanups } from './helpers/suite.mjs';
import { failOnUnhandledRejections } from './helpers/unhandled.mjs';

failOnUnhandledRejections();
const cleanups = useCleanups();

let cluster;
beforeAll(async () => {
	cluster = await startCluster();
}, 60_000);
afterAll(() => cluster?.stop());

// Every node as a seed, as a deployment would list them: the URL's node may be the one a
// test killed.
const options = (extra = {}) => ({ cluster: { nodes: cluster.seeds }, commandTimeout: 3000, connectTimeout: 1000, ...extra });

function managers(extra = {}) {
	const errors = [];
	const all = { ...options(extra), onError: (e) => errors.push(e.message) };
	const streams = new RedisStreamSessionManager(cluster.url, all);
	const info = new RedisInfoSessionManager(cluster.url, all);
	cleanups.push(() => streams.close(), () => info.close());
	return { streams, info, errors };
}

/** One session id per master: its `session:{id}` channel hashes to a slot that master serves. */
async function idsOnEveryMaster(prefix) {
	// Masters that serve slots (a just-demoted master may still show as one, with none).
	const masters = (await cluster.topology()).filter((n) => n.master && !n.failed && n.slots.length > 0).map((n) => n.port);
	const byMaster = new Map();
	for (let i = 0; byMaster.size < masters.length; i++) {
		if (i > 10_000) throw new Error(`no session id found for every master: ${JSON.stringify(masters)}`);
		const id = `${prefix}-${i}`;
		const owner = await cluster.ownerOf(slotOf(`session:${id}`));
		if (!byMaster.has(owner)) byMaster.set(owner, id);
	}
	return [...byMaster.entries()].map(([port, id]) => ({ port, id }));
}

/** `count` session ids whose session channels are in different slots served by `port`. */
async function idsOn(port, count, prefix) {
	const ids = [];
	const slots = new Set();
	for (let i = 0; ids.length < count; i++) {
		const id = `${prefix}-${i}`;
		const slot = slotOf(`session:${id}`);
		if (!slots.has(slot) && (await cluster.ownerOf(slot)) === port) {
			slots.add(slot);
			ids.push(id);
		}
	}
	return ids;
}

/** Subscribers of a sharded channel on the node `port` (PUBSUB SHARDNUMSUB). */
async function shardSubscribers(port, channel) {
	const reply = await onNode(port, ['PUBSUB', 'SHARDNUMSUB', channel]);
	return Number(reply[1]);
}

/**
 * What onError may report while a master is killed and replaced: the lost connection,
 * restores, refreshes and checks that failed while it was unreachable, and the check
 * that finds subscriptions missing while the topology changes (README, "Redis Cluster").
 */
const KILL_REPORTS = new RegExp(
	'^(' +
		[
			'lost the Redis pub/sub connection; reconnecting and resubscribing$',
			'could not restore the pub/sub subscriptions: .*; retrying$',
			'could not refresh \\d+ session liveness key\\(s\\): ',
			'Redis pub/sub connection check failed: ',
			"the cluster's nodes did not hold the wanted pub/sub subscriptions; subscribing everything again on a fresh connection$",
			'the Redis pub/sub connection stopped answering; replaced it and resubscribing$',
		].join('|') +
		')',
);
/** Never part of a fault report: what a restore sent wrongly, or a failure of ours. */
const NEVER_REPORTED = /CROSSSLOT|internal error|unexpected reply|no longer accepts data/i;

/** Subscribers of a sharded channel on every live node: `{ total, [port]: n }`. */
async function subscribersEverywhere(channel) {
	const found = { total: 0 };
	for (const node of cluster.nodes.filter((n) => n.alive !== false)) {
		const n = await shardSubscribers(node.port, channel);
		if (n > 0) found[node.port] = n;
		found.total += n;
	}
	return found;
}

/**
 * Sends numbered messages to `id`, then a marker, all from one manager to one channel (in
 * order); once the marker arrived, each message must have arrived exactly once.
 */
async function eachOnce(streams, rec, id, label, count = 5) {
	const sent = Array.from({ length: count }, (_, i) => `${label} ${i}`);
	for (const message of sent) await streams.send([id], message);
	await streams.send([id], `${label} marker`);
	await eventually(() => rec.chunks.includes(`${label} marker`), 5000, `${label} marker`);
	for (const message of sent) expect(rec.chunks.filter((c) => c === message), `${id}: ${message}`).toEqual([message]);
	expect(rec.chunks.filter((c) => c === `${label} marker`)).toHaveLength(1);
}

/** `CLUSTER FAILOVER` on `replica` until it serves `slot` (its master's). */
async function failOver(replica, slot) {
	// A manual failover gives up when the master does not pause in time; ask again, but
	// not once the replica has taken over (a takeover can take over 5 s here, and the
	// promoted node refuses CLUSTER FAILOVER).
	const tookOver = async () => (await cluster.ownerOf(slot, replica)) === replica;
	await eventually(async () => {
		if (await tookOver()) return true;
		await onNode(replica, ['CLUSTER', 'FAILOVER']).catch((error) => {
			if (!/send CLUSTER FAILOVER to a replica/.test(error.message)) throw error;
		});
		return eventually(tookOver, 10_000, 'takeover').then(() => true, () => false);
	}, 30_000, 'the replica to take over');
}

/** Creates a recorded stream session for each id: `Map<id, recorder>`. */
async function held(streams, ids) {
	const recs = new Map();
	for (const id of ids) {
		const rec = recorder();
		recs.set(id, rec);
		await streams.create(id, rec);
	}
	return recs;
}

/** Each session of `recs` subscribed once, at its channel's slot owner now, and nowhere else. */
async function subscribedOnceAtOwners(recs, askPort) {
	for (const session of recs.keys()) {
		const owner = await cluster.ownerOf(slotOf(`session:${session}`), askPort);
		await eventually(
			async () => JSON.stringify(await subscribersEverywhere(`session:${session}`)) === JSON.stringify({ total: 1, [owner]: 1 }),
			10_000,
			`${session} subscribed once, at ${owner}`,
		);
	}
}

describe('Redis Cluster', () => {
	it('sessions on every master: sharded channels at the slot owner, messages across managers and OS processes', async () => {
		const sender = managers();
		const receiver = managers();
		const ids = await idsOnEveryMaster('m');
		const recs = new Map();
		for (const { id } of ids) {
			const rec = recorder();
			recs.set(id, rec);
			await receiver.streams.create(id, rec);
		}
		for (const { id, port } of ids) {
			// SSUBSCRIBE at the owner of the channel's slot, for both channels of the session.
			expect(await shardSubscribers(port, `session:${id}`)).toBe(1);
			const deleteOwner = await cluster.ownerOf(slotOf(`delete:session:${id}`));
			expect(await shardSubscribers(deleteOwner, `delete:session:${id}`)).toBe(1);
			expect(await sender.streams.has(id)).toBe(true);
		}
		// One send to sessions on three masters: split per slot, nothing CROSSSLOT.
		await sender.streams.send(ids.map((s) => s.id), 'to all three');
		for (const rec of recs.values()) await eventually(() => rec.chunks.includes('to all three'), 5000, 'delivery');

		// A second OS process sends and deletes.
		const peer = await spawnPeer('ours', cluster.url, options());
		cleanups.push(() => peer.kill());
		await peer.request('streams', { method: 'send', args: [[ids[0].id], 'from another process'] });
		await eventually(() => recs.get(ids[0].id).chunks.includes('from another process'), 5000, 'delivery from the peer');
		await peer.request('streams', { method: 'send', args: [undefined, 'broadcast'] });
		for (const rec of recs.values()) await eventually(() => rec.chunks.includes('broadcast'), 5000, 'broadcast');
		await peer.request('streams', { method: 'delete', args: [ids[1].id] });
		await eventually(() => recs.get(ids[1].id).closed, 5000, 'the deleted session to close');
		expect(await sender.streams.has(ids[1].id)).toBe(false);
		expect(await peer.request('failures')).toEqual([]);
		expect(sender.errors).toEqual([]);
		expect(receiver.errors).toEqual([]);
	});

	it('close() drops the liveness keys of sessions on every master (one release per key, across slots)', async () => {
		const { streams, errors } = managers();
		const observer = managers();
		const ids = await idsOnEveryMaster('close');
		for (const { id } of ids) await streams.create(id, recorder());
		for (const { id } of ids) expect(await observer.streams.has(id)).toBe(true);
		await streams.close();
		for (const { id } of ids) expect(await observer.streams.has(id)).toBe(false);
		expect(errors).toEqual([]);
	});

	it('a rolling deploy: close() of the old process keeps a session the new process re-created', async () => {
		await rollingDeployKeepsSessions(cluster.url, options(), 'rolled-cluster', (p) => cleanups.push(() => p.kill()));
	}, 30_000);

	it('info: every method, and delete removes keys and reverse-index entries on several masters', async () => {
		const { info } = managers();
		const id = 'info-1';
		await info.setClientInfo(id, { name: 'c', version: '1' });
		await info.setClientCapabilities(id, { roots: {} });
		await info.setLogLevel(id, 'debug');
		expect(await info.getClientInfo(id)).toEqual({ name: 'c', version: '1' });
		expect(await info.getLogLevel(id)).toBe('debug');
		const uris = ['file:///a', 'file:///b', 'file:///c', 'file:///d', 'file:///e'];
		for (const uri of uris) await info.addSubscription(id, uri);
		// The subscription sets live in several slots on more than one master.
		const owners = new Set();
		for (const uri of uris) owners.add(await cluster.ownerOf(slotOf(`tmcp:subscriptions:${uri}`)));
		expect(owners.size).toBeGreaterThan(1);
		expect(await info.getSubscriptions('file:///a')).toEqual([id]);

		await info.delete(id);
		await expect(info.getClientInfo(id)).rejects.toThrow(/not found/);
		await expect(info.getClientCapabilities(id)).rejects.toThrow(/not found/);
		await expect(info.getLogLevel(id)).rejects.toThrow(/not found/);
		for (const uri of uris) expect(await info.getSubscriptions(uri)).toEqual([]);
	});

	it('createSessionManagers and RedisSubscriptionManager work on the cluster (sharded tmcp:subscriptions)', async () => {
		const a = createSessionManagers(cluster.url, options());
		const b = new RedisSubscriptionManager(cluster.url, options());
		cleanups.push(() => a.streams.close(), () => a.info.close(), () => a.subscriptions.dispose(), () => b.dispose());
		const received = [];
		const listener = {
			async acknowledge() {},
			async send(notification) {
				received.push(notification);
			},
			async close() {},
		};
		expect(await a.subscriptions.create({ id: 1, origin: 'o', filters: { resourceSubscriptions: ['file:///w'] } }, listener)).toBe(true);
		const owner = await cluster.ownerOf(slotOf('tmcp:subscriptions'));
		expect(await shardSubscribers(owner, 'tmcp:subscriptions')).toBe(1);
		await b.send({ jsonrpc: '2.0', method: 'notifications/resources/updated', params: { uri: 'file:///w' } });
		await eventually(() => received.length === 1, 5000, 'the notification from the other manager');
		expect(received[0].params.uri).toBe('file:///w');
	});

	it('upstreamCompatible: broadcast and info delete SCAN every master', async () => {
		const receiver = managers();
		const compat = managers({ upstreamCompatible: true });
		const ids = await idsOnEveryMaster('uc');
		const recs = [];
		for (const { id } of ids) {
			const rec = recorder();
			recs.push(rec);
			await receiver.streams.create(id, rec);
		}
		// One PUBLISH per liveness key found: keys on three masters.
		await compat.streams.send(undefined, 'scanned broadcast');
		for (const rec of recs) await eventually(() => rec.chunks.includes('scanned broadcast'), 5000, 'the scanned broadcast');

		const uris = ['file:///p', 'file:///q', 'file:///r', 'file:///s'];
		for (const uri of uris) await compat.info.addSubscription('uc-info', uri);
		await compat.info.delete('uc-info');
		for (const uri of uris) expect(await compat.info.getSubscriptions(uri)).toEqual([]);
		expect(compat.errors).toEqual([]);
	});

	it('a delete published while the owner lost a pub/sub connection stays deleted', async () => {
		const errors = [];
		const all = options({ onError: (e) => errors.push(e.message), sessionTtlSeconds: 3 });
		const owner = new RedisStreamSessionManager(cluster.url, all);
		const other = new RedisStreamSessionManager(cluster.url, options());
		cleanups.push(() => owner.close(), () => other.close());
		const gone = recorder();
		const kept = recorder();
		await owner.create('blip-X', gone);
		await owner.create('blip-Y', kept);

		// The delete is published while the owner has no subscription at that node.
		const node = await cluster.ownerOf(slotOf('delete:session:blip-X'));
		await onNode(node, ['CLIENT', 'KILL', 'TYPE', 'pubsub']);
		await other.delete('blip-X');

		await eventually(() => errors.some((m) => /lost the Redis pub\/sub connection/.test(m)), 5000, 'loss reported');
		await eventually(() => gone.closed, 10_000, 'the stream of blip-X closed by its owner');
		expect(await other.has('blip-X')).toBe(false);
		// blip-Y was not deleted: still live and receiving.
		expect(kept.closed).toBe(false);
		await deliveryResumes(other, kept, 'blip-Y', 'still here');
		expect(await other.has('blip-Y')).toBe(true);
	});

	it('a live slot migration moves the subscription to the new owner and delivery resumes, each message once', async () => {
		const { streams, errors } = managers();
		const [{ id, port: from }] = await idsOnEveryMaster('mig');
		const rec = recorder();
		await streams.create(id, rec);
		await eachOnce(streams, rec, id, 'before');
		expect(await subscribersEverywhere(`session:${id}`)).toEqual({ total: 1, [from]: 1 });

		const slot = slotOf(`session:${id}`);
		const to = (await cluster.topology()).find((n) => n.master && !n.failed && n.port !== from).port;
		const moved = Date.now();
		await cluster.moveSlot(slot, to);
		expect(await cluster.ownerOf(slot)).toBe(to);

		await eventually(async () => (await shardSubscribers(to, `session:${id}`)) === 1, 10_000, 'the subscription at the new owner');
		const ms = await deliveryResumes(streams, rec, id, 'after migration', 20_000, moved);
		console.log(`cluster slot migration: delivery resumed ${ms} ms after the migration began`);
		// Subscribed once, at the new owner only (the old owner dropped it with the slot).
		expect(await subscribersEverywhere(`session:${id}`)).toEqual({ total: 1, [to]: 1 });
		await eachOnce(streams, rec, id, 'migrated');
		expect(await subscribersEverywhere(`session:${id}`)).toEqual({ total: 1, [to]: 1 });
		console.log(`cluster slot migration: onError got ${JSON.stringify(errors)}`);
		// Nothing was lost for the manager: a migration reports nothing (a pub/sub
		// connection the server dropped would be reported as such).
		expect(errors.filter((e) => !/^lost the Redis pub\/sub connection/.test(e))).toEqual([]);
	});

	it('a manual failover (CLUSTER FAILOVER): subscriptions restored at the promoted replica', async () => {
		const { streams, info } = managers();
		const [{ id, port: master }] = await idsOnEveryMaster('mf');
		const rec = recorder();
		await streams.create(id, rec);
		await info.setClientInfo(id, { name: 'before', version: '1' });
		const replica = await cluster.replicaOf(master);
		const began = Date.now();
		await failOver(replica, slotOf(`session:${id}`));

		const ms = await deliveryResumes(streams, rec, id, 'after manual failover', 20_000, began);
		console.log(`cluster manual failover: delivery resumed ${ms} ms after CLUSTER FAILOVER`);
		// Subscribed once within the slot's shard: a demoted master still gets its shard's
		// messages (sharded messages reach the replicas too), so the subscription may stay.
		const subscribed = async () => (await shardSubscribers(replica, `session:${id}`)) + (await shardSubscribers(master, `session:${id}`));
		await eventually(async () => (await subscribed()) === 1, 10_000, 'one subscription within the shard');
		// Not subscribed at both the demoted master and the new one: each message once.
		await streams.send([id], 'once');
		await streams.send([id], 'marker');
		await eventually(() => rec.chunks.includes('marker'), 5000, 'the marker');
		expect(rec.chunks.filter((c) => c === 'once')).toEqual(['once']);
		expect(await subscribed()).toBe(1);
		await until(() => info.setClientInfo(id, { name: 'after', version: '2' }), 'a write after the failover');
		expect(await info.getClientInfo(id)).toEqual({ name: 'after', version: '2' });
		expect(await streams.has(id)).toBe(true);
	});

	it('a graceful CLUSTER FAILOVER is followed with no fault seen: subscriptions move to the promoted replica, none left at the demoted master', async () => {
		// A TTL of 600 s puts the periodic check 200 s away: only following the topology
		// while settled can find this failover, which raises no error anywhere.
		const { streams, errors } = managers({ sessionTtlSeconds: 600 });
		const placed = await idsOnEveryMaster('gf');
		const recs = await held(streams, placed.map((p) => p.id));
		const [{ id, port: master }] = placed;
		let replica;
		await eventually(async () => (replica = await cluster.replicaOf(master)) !== undefined, 10_000, `a replica of ${master}`);
		await failOver(replica, slotOf(`session:${id}`));
		await eventually(() => cluster.healthy(), 30_000, 'the cluster to report ok');
		await subscribedOnceAtOwners(recs, replica);
		for (const [session, rec] of recs) await eachOnce(streams, rec, session, 'after the graceful failover');
		expect(errors.filter((e) => !KILL_REPORTS.test(e) || NEVER_REPORTED.test(e))).toEqual([]);
	});

	it('a migration onto a node, then a failover of that node: every subscription at its owner, none at the demoted master, each message once', async () => {
		const { streams, errors } = managers({ sessionTtlSeconds: 3 });
		const placed = await idsOnEveryMaster('mgf');
		const [{ id: migrated, port: from }] = placed;
		const { id: native, port: to } = placed.find((p) => p.port !== from);
		const recs = await held(streams, placed.map((p) => p.id));
		const slot = slotOf(`session:${migrated}`);
		await cluster.moveSlot(slot, to);
		await eventually(async () => (await shardSubscribers(to, `session:${migrated}`)) === 1, 10_000, 'the subscription at the new owner');
		await deliveryResumes(streams, recs.get(migrated), migrated, 'after the migration');

		// The node the slot moved onto fails over to its replica: the migrated slot and the
		// node's own go with it. (After the earlier tests' failovers, its replica may be
		// one that is still attaching.)
		let replica;
		await eventually(async () => (replica = await cluster.replicaOf(to)) !== undefined, 10_000, `a replica of ${to}`);
		await failOver(replica, slot);
		expect(await cluster.ownerOf(slotOf(`session:${native}`), replica)).toBe(replica);
		await eventually(() => cluster.healthy(), 30_000, 'the cluster to report ok');
		for (const [id, rec] of recs) await deliveryResumes(streams, rec, id, `after the failover ${id}`, 10_000);
		// Nothing left at the demoted master, which still gets its shard's messages: each
		// subscription once, at its owner, and each message once.
		await subscribedOnceAtOwners(recs, replica);
		for (const [id, rec] of recs) await eachOnce(streams, rec, id, 'after the failover');
		for (const id of recs.keys()) expect(await streams.has(id), id).toBe(true);
		for (const rec of recs.values()) expect(rec.closed).toBe(false);
		expect(errors.filter((e) => !KILL_REPORTS.test(e) || NEVER_REPORTED.test(e))).toEqual([]);
	});

	it('a graceful failover: nothing is subscribed at the demoted master, now a replica that would deliver its shard a second time', async () => {
		// The demoted master drops our subscriptions with `sunsubscribe` pushes. Subscribed
		// again at once on the same connection, they went by the crate's slot map, which
		// still named that node: as a replica of the new master it accepts SSUBSCRIBE and
		// delivers every message of the shard beside the new master (a soak saw messages
		// delivered twice that way). They must wait for the topology to show the move.
		const { streams, errors } = managers();
		const [{ port: master }] = await idsOnEveryMaster('demoted');
		const ids = await idsOn(master, 20, 'demoted');
		const recs = await held(streams, ids);
		const monitor = await nodeClient(master);
		cleanups.push(() => monitor.destroy());
		const subscribed = [];
		await monitor.monitor((line) => {
			if (/"ssubscribe"/i.test(line)) subscribed.push(line);
		});
		let replica;
		await eventually(async () => (replica = await cluster.replicaOf(master)) !== undefined, 10_000, `a replica of ${master}`);
		await failOver(replica, slotOf(`session:${ids[0]}`));
		await eventually(() => cluster.healthy(), 30_000, 'the cluster to report ok');
		for (const [id, rec] of recs) await deliveryResumes(streams, rec, id, `after the failover ${id}`, 10_000);
		await subscribedOnceAtOwners(recs, replica);
		expect(subscribed).toEqual([]);
		for (const [id, rec] of recs) await eachOnce(streams, rec, id, 'after the failover');
		expect(errors.filter((e) => !KILL_REPORTS.test(e) || NEVER_REPORTED.test(e))).toEqual([]);
	});

	it('liveness keys are still refreshed 30 s after a failover', { timeout: 90_000 }, async () => {
		const { streams, errors } = managers({ sessionTtlSeconds: 3 });
		const watcher = new RedisStreamSessionManager(cluster.url, options());
		cleanups.push(() => watcher.close());
		const placed = await idsOnEveryMaster('lf');
		const recs = await held(streams, placed.map((p) => p.id));
		const [{ id, port: master }] = placed;
		const replica = await cluster.replicaOf(master);
		await failOver(replica, slotOf(`session:${id}`));
		await eventually(() => cluster.healthy(), 30_000, 'the cluster to report ok');
		for (const [session, rec] of recs) await deliveryResumes(streams, rec, session, `after the failover ${session}`, 10_000);
		// Three refreshes a TTL: keys that stopped being refreshed would be gone within 3 s.
		const reported = errors.length;
		const started = Date.now();
		while (Date.now() - started < 30_000) {
			for (const session of recs.keys()) expect(await watcher.has(session), session).toBe(true);
			await new Promise((r) => setTimeout(r, 500));
		}
		expect(errors.slice(reported)).toEqual([]);
		for (const [session, rec] of recs) await eachOnce(streams, rec, session, 'still');
		for (const rec of recs.values()) expect(rec.closed).toBe(false);
	});

	it('one shard lost its data (FLUSHALL on a master that does not hold tmcp:epoch): its sessions are kept and their keys written again', async () => {
		// What a master SIGKILLed and restarted without persistence before its replica took
		// over does: it comes back empty and still the master. A cluster soak saw the next
		// refresh read that shard's missing liveness keys as deletes elsewhere (the one
		// tmcp:epoch key, on another shard, was intact) and end a third of the live sessions.
		const { streams, errors } = managers({ sessionTtlSeconds: 3 });
		const watcher = new RedisStreamSessionManager(cluster.url, options());
		cleanups.push(() => watcher.close());
		const placed = await idsOnEveryMaster('sl');
		const recs = await held(streams, placed.map((p) => p.id));
		const epochMaster = await cluster.ownerOf(slotOf('tmcp:epoch'));
		const { id, port } = placed.find((p) => p.port !== epochMaster);
		// Every shard's own epoch is written by a refresh once the topology is known.
		const shardEpochs = async () => {
			for (const p of placed) if ((await onNode(p.port, ['KEYS', 'tmcp:epoch:*'])).length === 0) return false;
			return true;
		};
		await eventually(shardEpochs, 10_000, 'a data epoch on every shard');

		await onNode(port, ['FLUSHALL']);
		expect(await watcher.has(id)).toBe(false);
		await eventually(() => watcher.has(id), 10_000, `the liveness key of ${id} written again`);
		await eventually(shardEpochs, 10_000, 'the lost shard\'s epoch written again');
		for (const [session, rec] of recs) {
			expect(rec.closed, session).toBe(false);
			expect(await watcher.has(session), session).toBe(true);
			await eachOnce(streams, rec, session, 'after the loss');
		}
		expect(errors).toEqual([]);
	});

	it('a master killed (SIGKILL): its replica takes over, subscriptions and liveness come back, each message once', async () => {
		const { streams, info, errors } = managers();
		const ids = await idsOnEveryMaster('k');
		const { id, port: victim } = ids[0];
		// More sessions on the victim, in other slots: their restored subscriptions must not
		// be sent as one multi-slot SSUBSCRIBE (refused with CROSSSLOT).
		const more = await idsOn(victim, 3, 'k-more');
		const recs = await held(streams, [...ids.map((p) => p.id), ...more]);
		const replica = await cluster.replicaOf(victim);
		const killed = Date.now();
		await cluster.kill(victim);
		// Calls of one tick for the dead master and a live one: the live one is answered.
		const [toDead, toLive] = await Promise.allSettled([
			streams.send([id], 'while down'),
			streams.send([ids[1].id], 'while down'),
		]);
		expect(toLive.status).toBe('fulfilled');
		if (toDead.status === 'rejected') expect(toDead.reason.message).toMatch(/Could not send to sessions/);
		const slot = slotOf(`session:${id}`);
		await eventually(async () => (await cluster.ownerOf(slot, replica)) === replica, 30_000, 'the replica to be promoted');

		const ms = await deliveryResumes(streams, recs.get(id), id, 'after the kill', 30_000, killed);
		console.log(`cluster master SIGKILL: delivery resumed ${ms} ms after the kill`);
		for (const other of more) await deliveryResumes(streams, recs.get(other), other, 'after the kill too', 10_000);
		// Sessions on the other masters never stopped working.
		for (const other of ids.slice(1)) {
			await streams.send([other.id], 'still here');
			await eventually(() => recs.get(other.id).chunks.includes('still here'), 5000, 'delivery on another master');
		}
		// Every session subscribed once, at its slot's owner now (the promoted replica for
		// the victim's), and nowhere else.
		await subscribedOnceAtOwners(recs, replica);
		// Each message once, on every session. The sends of the kill's tick arrived at most
		// once: the pub/sub connection is replaced when a node's connection is lost (a
		// restore on the same one can leave a subscription at a replica that delivers
		// twice), so a message published at that instant may be lost, never doubled.
		for (const [session, rec] of recs) await eachOnce(streams, rec, session, 'after recovery');
		expect(recs.get(ids[1].id).chunks.filter((c) => c === 'while down').length).toBeLessThanOrEqual(1);
		expect(recs.get(id).chunks.filter((c) => c === 'while down').length).toBeLessThanOrEqual(1);
		await eventually(() => streams.has(id), 15_000, 'the liveness key on the new master');
		await until(() => info.setClientInfo(id, { name: 'x', version: '1' }), 'a write after the failover');
		console.log(`cluster master SIGKILL: onError got ${JSON.stringify(errors)}`);
		// The loss was reported, and nothing but what a dead master causes.
		expect(errors.some((e) => /^lost the Redis pub\/sub connection/.test(e))).toBe(true);
		expect(errors.filter((e) => !KILL_REPORTS.test(e) || NEVER_REPORTED.test(e))).toEqual([]);
	});

	it('sessions created while their master is down and back before any failover live on: subscribed once, at the master, each message once', { timeout: 90_000 }, async () => {
		// Their liveness keys are written as soon as the master is back, their subscriptions
		// confirmed up to seconds later (redis-rs retries them after a pause): longer than
		// the TTL. A refresh then found the keys expired, the data epochs as last read, and
		// took that for a delete elsewhere: the sessions were closed, with no error.
		const own = await startCluster({ keepDirs: true });
		cleanups.push(() => own.stop());
		const errors = [];
		const streams = new RedisStreamSessionManager(own.url, {
			cluster: { nodes: own.seeds },
			commandTimeout: 5000,
			connectTimeout: 1000,
			// The shortest TTL: a refresh and a check of the pub/sub connection every second.
			sessionTtlSeconds: 3,
			onError: (e) => errors.push(e.message),
		});
		cleanups.push(() => streams.close());
		const owner = async (id) => own.ownerOf(slotOf(`session:${id}`));
		const victim = await owner('down-0');
		const replica = await own.replicaOf(victim);
		// No failover: the master comes back as the master.
		await onNode(replica, ['CONFIG', 'SET', 'cluster-replica-no-failover', 'yes']);
		const ids = [];
		for (let i = 1; ids.length < 4; i++) if ((await owner(`down-${i}`)) === victim) ids.push(`down-${i}`);
		const recs = await held(streams, ['down-0']);
		await eventually(async () => (await shardSubscribers(victim, 'session:down-0')) === 1, 10_000, 'down-0 subscribed at its master');

		await own.kill(victim);
		await eventually(() => errors.some((e) => /^lost the Redis pub\/sub connection/.test(e)), 10_000, 'the loss seen');
		const creations = ids.map((id) => {
			const rec = recorder();
			recs.set(id, rec);
			return streams.create(id, rec);
		});
		await new Promise((r) => setTimeout(r, 1500));
		await own.restart(victim);
		const outcomes = await Promise.allSettled(creations);
		console.log(`cluster master down: creations ${JSON.stringify(outcomes.map((o) => (o.status === 'fulfilled' ? 'ok' : o.reason.message)))}`);
		// A creation may also fail with a clear error while the master is down: made again.
		for (const [i, o] of outcomes.entries()) if (o.status === 'rejected') await until(() => streams.create(ids[i], recs.get(ids[i])), `create ${ids[i]} again`);
		await eventually(() => own.healthy(), 30_000, 'the cluster healthy again');
		expect(await owner('down-0')).toBe(victim);
		// A few refreshes and checks of the pub/sub connection.
		await new Promise((r) => setTimeout(r, 2500));
		const where = async () => {
			const found = {};
			for (const id of recs.keys()) {
				found[id] = { closed: recs.get(id).closed };
				for (const node of own.nodes) found[id][node.port === victim ? 'M' : node.port === replica ? 'R' : node.port] = await shardSubscribers(node.port, `session:${id}`);
			}
			return found;
		};
		try {
			for (const [id, rec] of recs) {
				expect(rec.closed, `${id} closed`).toBe(false);
				await eventually(async () => (await shardSubscribers(victim, `session:${id}`)) === 1, 10_000, `${id} subscribed at its master`);
				expect(await shardSubscribers(replica, `session:${id}`), `${id} at the replica`).toBe(0);
			}
		} catch (e) {
			e.message += `\nsubscribers (M: master, R: replica): ${JSON.stringify(await where())}; onError: ${JSON.stringify(errors)}`;
			throw e;
		}
		for (const [id, rec] of recs) await eachOnce(streams, rec, id, 'after the restart');
		expect(errors.filter((e) => !KILL_REPORTS.test(e) || NEVER_REPORTED.test(e))).toEqual([]);
	});

	it('a master down whose replica served its slots before: nothing is subscribed at the replica meanwhile, and all at the master once it is back', { timeout: 120_000 }, async () => {
		// redis-rs sends an SSUBSCRIBE (read-only) to a replica of its shard when it has no
		// connection to the master, if it has one to the replica (here: it served the slots
		// before a failover back). The replica accepts it; a cluster soak saw 269 reach the
		// replica of a master just SIGKILLed. Held there, a channel delivers every message a
		// second time once it is subscribed at the master too, and is dropped without a
		// word when the replica resyncs from the master that came back (4 live sessions got
		// nothing after this test's restart before).
		const own = await startCluster({ keepDirs: true });
		cleanups.push(() => own.stop());
		const errors = [];
		// One seed, a replica, as the soak gives each process one node.
		const streams = new RedisStreamSessionManager(`redis://127.0.0.1:${own.nodes[5].port}`, {
			cluster: true,
			commandTimeout: 5000,
			connectTimeout: 1000,
			// A check of the pub/sub connection every second.
			sessionTtlSeconds: 3,
			onError: (e) => errors.push(e.message),
		});
		cleanups.push(() => streams.close());
		const owner = async (id, ask) => own.ownerOf(slotOf(`session:${id}`), ask);
		const victim = await owner('back-0');
		const replica = await own.replicaOf(victim);
		const ids = [];
		for (let i = 1; ids.length < 3; i++) if ((await owner(`back-${i}`)) === victim) ids.push(`back-${i}`);
		const recs = await held(streams, ['back-0']);
		// The replica serves the slots for a moment (the manager connects to it), then the
		// master again.
		const takeOver = async (port) => {
			await eventually(async () => {
				if ((await owner('back-0', port)) === port) return true;
				await onNode(port, ['CLUSTER', 'FAILOVER']).catch(() => {});
				return eventually(async () => (await owner('back-0', port)) === port, 10_000, 'takeover').then(() => true, () => false);
			}, 30_000, `${port} to take over`);
		};
		await takeOver(replica);
		await eventually(async () => (await shardSubscribers(replica, 'session:back-0')) === 1, 10_000, 'back-0 followed to the replica');
		await takeOver(victim);
		await eventually(async () => (await shardSubscribers(victim, 'session:back-0')) === 1 && (await shardSubscribers(replica, 'session:back-0')) === 0, 10_000, 'back-0 back at the master');
		// No failover now: the master comes back as the master.
		await onNode(replica, ['CONFIG', 'SET', 'cluster-replica-no-failover', 'yes']);

		const before = errors.length;
		await own.kill(victim);
		await eventually(() => errors.slice(before).some((e) => /^lost the Redis pub\/sub connection/.test(e)), 10_000, 'the loss seen');
		// Created on the connection that replaced the one the kill broke (a replaced
		// connection's pushes are dropped, and it closes once its last call is answered).
		const creations = ids.map((id) => {
			const rec = recorder();
			recs.set(id, rec);
			return streams.create(id, rec);
		});
		const atReplica = async (which = [...recs.keys()]) => {
			const found = {};
			for (const id of which) found[id] = await shardSubscribers(replica, `session:${id}`);
			return found;
		};
		const killed = Date.now();
		for (let i = 0; i < 7; i++) {
			await new Promise((r) => setTimeout(r, 500));
			const found = await atReplica(ids);
			if (Object.values(found).some((n) => n > 0)) {
				const clients = String(await onNode(replica, ['CLIENT', 'LIST'])).split('\n').filter((l) => /ssub=[1-9]/.test(l));
				throw new Error(`subscribed at the replica ${Date.now() - killed} ms after the loss: ${JSON.stringify(found)}; its subscribed clients: ${clients.map((l) => l.match(/age=\d+|ssub=\d+|cmd=\S+/g).join(',')).join(' | ')}`);
			}
		}
		await own.restart(victim);
		const outcomes = await Promise.allSettled(creations);
		console.log(`cluster master down after a failover back: creations ${JSON.stringify(outcomes.map((o) => (o.status === 'fulfilled' ? 'ok' : o.reason.message)))}`);
		for (const [i, o] of outcomes.entries()) if (o.status === 'rejected') await until(() => streams.create(ids[i], recs.get(ids[i])), `create ${ids[i]} again`);
		await eventually(() => own.healthy(), 30_000, 'the cluster healthy again');
		expect(await owner('back-0')).toBe(victim);
		for (const [id, rec] of recs) {
			expect(rec.closed, `${id} closed`).toBe(false);
			await eventually(async () => (await shardSubscribers(victim, `session:${id}`)) === 1, 10_000, `${id} subscribed at the master`);
		}
		expect(Object.values(await atReplica()).every((n) => n === 0)).toBe(true);
		for (const [id, rec] of recs) await eachOnce(streams, rec, id, 'after the restart');
		expect(errors.filter((e) => !KILL_REPORTS.test(e) || NEVER_REPORTED.test(e))).toEqual([]);
	});

	it('subscriptions/listen: the master of tmcp:subscriptions killed, the subscription comes back at its replica', async () => {
		// Its own cluster: the kill leaves that shard without a replica. A long TTL keeps
		// the periodic connection check (every third of it) out of the test: the restore
		// after the lost connection alone must bring the subscription back.
		const own = await startCluster();
		cleanups.push(() => own.stop());
		const opts = { cluster: { nodes: own.seeds }, commandTimeout: 3000, connectTimeout: 1000, sessionTtlSeconds: 600 };
		const listening = new RedisSubscriptionManager(own.url, opts);
		const sending = new RedisSubscriptionManager(own.url, opts);
		cleanups.push(() => listening.dispose(), () => sending.dispose());
		// This test failed about 1 full-suite run in 3 (no notification for 30 s after the
		// promotion), never alone: on a failure it shows what each connection went through.
		const seen = [];
		const started = Date.now();
		const note = (m) => seen.push(`+${Date.now() - started} ms ${[m.event, m.role, m.serverPort, m.error?.message].filter(Boolean).join(' ')}`);
		for (const channel of [CHANNELS.connection, CHANNELS.topology, CHANNELS.error]) {
			dc.subscribe(channel, note);
			cleanups.push(() => dc.unsubscribe(channel, note));
		}
		const received = [];
		const listener = {
			async acknowledge() {},
			async send(notification) {
				received.push(notification.params.title);
			},
			async close() {},
		};
		await listening.create({ id: 1, origin: 'o', filters: { resourceSubscriptions: ['file:///k'] } }, listener);
		const slot = slotOf('tmcp:subscriptions');
		const victim = await own.ownerOf(slot);
		const replica = await own.replicaOf(victim);
		await own.kill(victim);
		await eventually(async () => (await own.ownerOf(slot, replica)) === replica, 30_000, 'the replica to be promoted');
		seen.push(`+${Date.now() - started} ms promoted`);
		let n = 0;
		try {
			await until(async () => {
				const title = `after the kill ${n++}`;
				await sending.send({ jsonrpc: '2.0', method: 'notifications/resources/updated', params: { uri: 'file:///k', title } });
				await eventually(() => received.includes(title), 1000, 'the notification');
			}, 'a notification after the kill', 30_000);
		} catch (e) {
			e.message += `\nevents (both managers): ${seen.join(' | ')}\nlistening: ${inspect(listening.stats(), { depth: 4, breakLength: Infinity })}`;
			throw e;
		}
		expect(await shardSubscribers(replica, 'tmcp:subscriptions')).toBe(1);
	});

	// Failed about 1 run in 3 before the liveness refresh confirmed the topology before
	// reading a missing key as a delete: a refresh that waited out the failover got its
	// replies from the promoted replica, where the keys had expired, and ended a session.
	it('its only seed node killed for good: delivery, info and liveness keep working from the nodes last seen', { timeout: 120_000 }, async () => {
		// Its own cluster: the seed master is killed and never comes back.
		const own = await startCluster();
		cleanups.push(() => own.stop());
		const seedPort = (await own.topology()).find((n) => n.master && n.slots.length > 0).port;
		const errors = [];
		// Only the seed: what a user with `{ cluster: true }` and one URL has.
		const opts = { cluster: true, commandTimeout: 3000, connectTimeout: 1000, sessionTtlSeconds: 3, onError: (e) => errors.push(e.message) };
		const streams = new RedisStreamSessionManager(`redis://127.0.0.1:${seedPort}`, opts);
		const info = new RedisInfoSessionManager(`redis://127.0.0.1:${seedPort}`, opts);
		const watcher = new RedisStreamSessionManager(own.url, { cluster: { nodes: own.seeds }, commandTimeout: 3000 });
		cleanups.push(() => streams.close(), () => info.close(), () => watcher.close());
		// A session on every master, the seed's among them.
		const ids = [];
		const owners = new Set();
		for (let i = 0; owners.size < 3; i++) {
			const id = `seed-${i}`;
			const owner = await own.ownerOf(slotOf(`session:${id}`));
			if (owners.has(owner)) continue;
			owners.add(owner);
			ids.push(id);
		}
		const recs = new Map(ids.map((id) => [id, recorder()]));
		for (const id of ids) await streams.create(id, recs.get(id));
		for (const id of ids) {
			await streams.send([id], 'before');
			await eventually(() => recs.get(id).chunks.includes('before'), 5000, 'delivery before the kill');
		}
		const replica = await own.replicaOf(seedPort);
		await own.kill(seedPort);
		const promoted = async () => (await own.topology(replica)).find((n) => n.port === replica)?.master;
		await eventually(promoted, 30_000, 'the replica to be promoted');
		for (const id of ids) await deliveryResumes(streams, recs.get(id), id, `after ${id}`, 30_000);
		await until(() => info.setClientInfo('seed-info', { name: 'after', version: '1' }), 'a write after the kill');
		expect(await info.getClientInfo('seed-info')).toEqual({ name: 'after', version: '1' });
		// Liveness: the keys on the dead master's shard may have expired while it could not
		// be reached (TTL 3 s); they are written again once it is served again, and then
		// stay for longer than two TTLs while no stream ends.
		await eventually(async () => {
			for (const id of ids) if (!(await watcher.has(id))) return false;
			return true;
		}, 15_000, 'every liveness key back');
		const started = Date.now();
		while (Date.now() - started < 7500) {
			for (const id of ids) expect(await watcher.has(id), id).toBe(true);
			await new Promise((r) => setTimeout(r, 500));
		}
		for (const id of ids) expect(recs.get(id).closed).toBe(false);
		for (const id of ids) await deliveryResumes(streams, recs.get(id), id, `still ${id}`, 10_000);
		// What went wrong while the node was down was reported; nothing after.
		expect(errors.filter((e) => !/pub\/sub|did not answer|refresh|reach/.test(e))).toEqual([]);
	});

	it("an ACL user with the README's minimal rule plus the cluster additions runs every method of the three classes", async () => {
		const password = 'Clust3r-pw';
		// Keep in sync with the README ("Redis ACL"): ACLs are per node, so on every node.
		const rule = [
			'on', `>${password}`, 'resetchannels', '~available:session:*', '~tmcp:*',
			'&session:*', '&delete:session:*', '&tmcp:broadcast', '&tmcp:subscriptions',
			'-@all', '+hello', '+ping', '+select', '+get', '+set', '+del', '+exists', '+sadd', '+srem',
			'+smembers', '+publish', '+subscribe', '+unsubscribe', '+eval',
			'+spublish', '+ssubscribe', '+sunsubscribe', '+cluster|slots', '+client|info',
		];
		for (const node of cluster.nodes.filter((n) => n.alive !== false)) {
			await onNode(node.port, ['ACL', 'SETUSER', 'tmcp', 'reset', ...rule]);
		}
		const url = cluster.url.replace('redis://', `redis://tmcp:${password}@`);
		const errors = [];
		const all = options({ onError: (e) => errors.push(e.message) });
		const streams = new RedisStreamSessionManager(url, all);
		const info = new RedisInfoSessionManager(url, all);
		const subscriptions = new RedisSubscriptionManager(url, all);
		cleanups.push(() => streams.close(), () => info.close(), () => subscriptions.dispose());
		// Every method of the three classes, on sessions, uris and channels in several slots.
		const rec = recorder();
		await streams.create('acl-c', rec);
		expect(await streams.has('acl-c')).toBe(true);
		await streams.send(['acl-c'], 'direct');
		await streams.send(undefined, 'broadcast');
		await eventually(() => rec.chunks.length === 2, 5000, 'deliveries');
		// Two channels on two shards: their order of arrival is not the order of sending.
		expect([...rec.chunks].sort()).toEqual(['broadcast', 'direct']);
		await info.setClientInfo('acl-c', { name: 'n', version: '1' });
		await info.setClientCapabilities('acl-c', { roots: { listChanged: true } });
		await info.setLogLevel('acl-c', 'warning');
		await info.addSubscription('acl-c', 'file:///acl-1');
		await info.addSubscription('acl-c', 'file:///acl-2');
		await info.addSubscription('acl-c', 'file:///acl-3');
		await info.removeSubscription('acl-c', 'file:///acl-3');
		expect(await info.getClientInfo('acl-c')).toEqual({ name: 'n', version: '1' });
		expect(await info.getClientCapabilities('acl-c')).toEqual({ roots: { listChanged: true } });
		expect(await info.getLogLevel('acl-c')).toBe('warning');
		expect(await info.getSubscriptions('file:///acl-1')).toEqual(['acl-c']);
		expect(await info.getSubscriptions('file:///acl-3')).toEqual([]);
		await info.delete('acl-c');
		expect(await info.getSubscriptions('file:///acl-1')).toEqual([]);
		expect(await info.getSubscriptions('file:///acl-2')).toEqual([]);
		await expect(info.getClientInfo('acl-c')).rejects.toThrow(/not found/);
		await expect(info.getLogLevel('acl-c')).rejects.toThrow(/not found/);
		const received = [];
		const closed = [];
		const listener = (tag) => ({
			async acknowledge() {},
			async send(n) {
				received.push(`${tag} ${n.method}`);
			},
			async close(reason) {
				closed.push(`${tag} ${reason}`);
			},
		});
		expect(await subscriptions.create({ id: 1, origin: 'o', filters: { toolsListChanged: true } }, listener('a'))).toBe(true);
		expect(await subscriptions.create({ id: 2, origin: 'p', filters: { toolsListChanged: true } }, listener('b'))).toBe(true);
		await subscriptions.send({ jsonrpc: '2.0', method: 'notifications/tools/list_changed' });
		await eventually(() => received.length === 2, 5000, 'the notification');
		expect(received.sort()).toEqual(['a notifications/tools/list_changed', 'b notifications/tools/list_changed']);
		expect(await subscriptions.close(1, 'o', 'cancelled')).toBe(true);
		await subscriptions.closeAll('p', 'closed');
		expect(closed.sort()).toEqual(['a cancelled', 'b closed']);
		await streams.delete('acl-c');
		expect(await streams.has('acl-c')).toBe(false);
		await eventually(() => rec.closed, 5000, 'the deleted stream closed');
		await streams.create('acl-d', recorder());
		await streams.close();
		expect(await info.getSubscriptions('file:///acl-1')).toEqual([]);
		expect(errors).toEqual([]);
	});

	it('a seed with a wrong password: calls reject with the seed\'s reason, and the password shows nowhere', async () => {
		const password = 'S33d-user-pw';
		const wrong = 'Wr0ng-s33d-pw';
		for (const node of cluster.nodes.filter((n) => n.alive !== false)) {
			await onNode(node.port, ['ACL', 'SETUSER', 'seeduser', 'reset', 'on', `>${password}`, '~*', '&*', '+@all']);
		}
		const url = cluster.url.replace('redis://', `redis://seeduser:${wrong}@`);
		const errors = [];
		const all = options({ commandTimeout: 2000, onError: (e) => errors.push(e) });
		const info = new RedisInfoSessionManager(url, all);
		const streams = new RedisStreamSessionManager(url, all);
		// Without onError: the warning path.
		const quiet = new RedisInfoSessionManager(url, options({ commandTimeout: 2000 }));
		cleanups.push(() => streams.close(), () => info.close(), () => quiet.close());
		const warnings = [];
		const onWarning = (w) => (w.code === 'TMCP_REDIS' || w.code === 'TEST_SENTINEL') && warnings.push(w);
		process.on('warning', onWarning);
		let failures;
		try {
			failures = await Promise.all([
				info.getClientInfo('x').catch((e) => e),
				streams.create('x', recorder()).catch((e) => e),
				info.setLogLevel('x', 'info').catch((e) => e),
			]);
			await Promise.allSettled([quiet.setLogLevel('y', 'info')]);
			process.emitWarning('sentinel', { code: 'TEST_SENTINEL' });
			await eventually(() => warnings.some((w) => w.code === 'TEST_SENTINEL'), 5000, 'the sentinel warning');
		} finally {
			process.off('warning', onWarning);
		}
		for (const error of failures) {
			expect(error).toBeInstanceOf(Error);
			// redis-rs says only "No connections found"; the seed's own answer is added.
			expect(error.message).toMatch(/WRONGPASS|invalid username-password/);
		}
		const ours = warnings.filter((w) => w.code === 'TMCP_REDIS');
		expect(ours.map((w) => w.message)).toEqual([expect.stringMatching(/^Could not store log level for session y: .*(WRONGPASS|invalid username-password)/)]);
		const shown = [...failures, ...errors, ...ours].map((e) => `${e.message}\n${e.stack}\n${inspect(e)}`).join('\n');
		expect(shown).not.toContain(wrong);
		expect(inspect(info)).not.toContain(wrong);
		expect(inspect(info)).toContain('seeduser:***@');
	});

	// One form everywhere (as sentinel.nodes). The URL's node is one nobody listens on, so
	// the cluster can only be found through the entries of the form under test.
	it.each([
		['"host:port" strings', (n) => `127.0.0.1:${n.port}`],
		['redis:// URLs', (n) => `redis://127.0.0.1:${n.port}`],
		['{ host, port } objects', (n) => ({ host: '127.0.0.1', port: n.port })],
	])('cluster.nodes as %s are seeds', async (_form, node) => {
		const nowhere = `redis://127.0.0.1:${await freePort()}`;
		const nodes = cluster.nodes.filter((n) => n.alive !== false).map(node);
		expect(await roundTrip(nowhere, { cluster: { nodes }, commandTimeout: 3000, connectTimeout: 1000 })).toEqual({ name: nowhere, version: '1' });
	});

	it.each([
		[[7000], /"cluster.nodes" must hold "host:port" strings, redis:\/\/ or rediss:\/\/ URLs or \{ host, port \} objects, got 7000/],
		[[undefined], /"cluster.nodes" must hold .* got undefined/],
		[['127.0.0.1'], /"cluster.nodes" must hold .* got "127.0.0.1"/],
		[['unix:///tmp/x.sock'], /"cluster.nodes" must hold .* got "unix:\/\/\/tmp\/x.sock"/],
		[['redis+unix:///tmp/x.sock'], /"cluster.nodes" must hold/],
		[[{ host: '127.0.0.1', port: 0 }], /"cluster.nodes\[0\].port" must be an integer from 1 to 65535, got 0/],
		[['127.0.0.1:7000', { host: '127.0.0.1', port: 7000, tls: true }], /Unknown option "cluster.nodes\[1\].tls" \(known: host, port\)/],
		[[['127.0.0.1', 7000]], /"cluster.nodes" must hold .* got an array/],
		[['redis://127.0.0.1:7000/#insecure'], /"cluster.nodes": .*certificate verification cannot be turned off/],
		// One way to reach every node (redis-rs's cluster client): a node's URL may not ask
		// for another, rather than be silently reached with the main URL's.
		[['redis://other:Node-pw@127.0.0.1:7000'], /"cluster.nodes": a node's URL gives a user or password other than the main URL's/],
		[['rediss://127.0.0.1:7000'], /"cluster.nodes": a rediss:\/\/ URL beside a redis:\/\/ main URL/],
		[['redis://127.0.0.1:7000/3'], /"cluster.nodes": a Redis Cluster has only database 0, but a node's URL selects database 3/],
	])('cluster.nodes %j is a TypeError at construction', (nodes, message) => {
		let error;
		try {
			cleanups.push(((m) => () => m.close())(new RedisStreamSessionManager(cluster.url, { cluster: { nodes } })));
		} catch (e) {
			error = e;
		}
		expect(error).toBeInstanceOf(TypeError);
		expect(error.code).toBe('TMCP_REDIS_BAD_ARGUMENT');
		expect(error.message).toMatch(message);
		expect(error.message).not.toContain('Node-pw');
	});

	it('a cluster.nodes URL with the main URL\'s credentials is a seed like any other', async () => {
		const nowhere = `redis://default@127.0.0.1:${await freePort()}`;
		const nodes = cluster.nodes.filter((n) => n.alive !== false).map((n) => `redis://default@127.0.0.1:${n.port}`);
		expect(await roundTrip(nowhere, { cluster: { nodes }, commandTimeout: 3000, connectTimeout: 1000 })).toEqual({ name: nowhere, version: '1' });
	});

	it('bad cluster options are a clear TypeError at construction', () => {
		expect(() => new RedisInfoSessionManager(`${cluster.url}/2`, { cluster: true })).toThrow(TypeError);
		expect(() => new RedisInfoSessionManager(`${cluster.url}/2`, { cluster: true })).toThrow(/database/);
		expect(() => new RedisStreamSessionManager(cluster.url, { cluster: { nodes: [] } })).toThrow(/cluster.nodes/);
		expect(() => new RedisStreamSessionManager(cluster.url, { cluster: 'yes' })).toThrow(TypeError);
		expect(() => new RedisSubscriptionManager(cluster.url, { cluster: true, sentinel: { nodes: ['127.0.0.1:1'] } })).toThrow(/exclude/);
		expect(() => new RedisInfoSessionManager('redis+unix:///tmp/x.sock', { cluster: true })).toThrow(TypeError);
	});
});
