// Upstream processes (@tmcp/session-manager-redis) and ours on one Redis, default names.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisInfoSessionManager, RedisStreamSessionManager } from '../index.mjs';
import { spawnPeer } from './helpers/peer.mjs';
import { eventually, observer, recorder, testRedis } from './helpers/redis.mjs';

let server;
let redis;
const peers = [];
/** @type {RedisStreamSessionManager} */
let streams;
/** @type {RedisInfoSessionManager} */
let info;

beforeAll(async () => {
	server = await testRedis();
	redis = await observer(server.url);
	streams = new RedisStreamSessionManager(server.url);
	info = new RedisInfoSessionManager(server.url);
});

afterAll(async () => {
	for (const peer of peers) await peer.kill();
	await streams?.close();
	await info?.close();
	await redis?.quit();
	await server?.stop();
});

async function upstream() {
	const p = await spawnPeer('upstream', server.url);
	peers.push(p);
	return p;
}

/** Upstream's create does not wait for its subscription; wait until Redis has it. */
async function subscribed(channel) {
	await eventually(async () => (await redis.pubSubNumSub(channel))[channel] >= 1, 5000, `${channel} subscribed`);
}

const received = async (peer, session) => (await peer.request('received', { session })) ?? { chunks: [], closed: false };

describe('streams', () => {
	it('upstream sends → ours delivers', async () => {
		const up = await upstream();
		const rec = recorder();
		await streams.create('ours-1', rec);
		await up.request('streams', { method: 'send', args: [['ours-1'], 'event: message\ndata: {"x":"é"}\n\n'] });
		await eventually(() => rec.chunks.length === 1, 5000, 'delivery');
		expect(rec.chunks).toEqual(['event: message\ndata: {"x":"é"}\n\n']);
	});

	it('ours sends → upstream delivers', async () => {
		const up = await upstream();
		await up.request('create', { session: 'up-1' });
		await subscribed('session:up-1');
		await streams.send(['up-1'], 'to upstream ✓');
		await eventually(async () => (await received(up, 'up-1')).chunks.length === 1, 5000, 'delivery');
		expect((await received(up, 'up-1')).chunks).toEqual(['to upstream ✓']);
		expect(await streams.has('up-1')).toBe(true);
	});

	it('an upstream broadcast reaches our sessions', async () => {
		const up = await upstream();
		const rec = recorder();
		await streams.create('ours-bc', rec);
		await up.request('streams', { method: 'send', args: [undefined, 'upstream broadcast'] });
		await eventually(() => rec.chunks.includes('upstream broadcast'), 5000, 'broadcast');
	});

	it('our broadcast reaches upstream sessions with upstreamCompatible', async () => {
		const up = await upstream();
		await up.request('create', { session: 'up-bc' });
		await subscribed('session:up-bc');
		const ours = new RedisStreamSessionManager(server.url, { upstreamCompatible: true });
		const rec = recorder();
		await ours.create('ours-bc2', rec);
		await ours.send(undefined, 'compat broadcast');
		// A second broadcast from the same sender arrives after the first (on each channel
		// and connection): once it arrived, a duplicate of the first would have too.
		await ours.send(undefined, 'sentinel');
		await eventually(async () => (await received(up, 'up-bc')).chunks.includes('sentinel'), 5000, 'upstream got it');
		await eventually(() => rec.chunks.includes('sentinel'), 5000, 'ours got it');
		expect(rec.chunks).toEqual(['compat broadcast', 'sentinel']);
		expect((await received(up, 'up-bc')).chunks).toEqual(['compat broadcast', 'sentinel']);
		await ours.close();
	});

	it('our delete closes an upstream stream', async () => {
		const up = await upstream();
		await up.request('create', { session: 'up-del' });
		await subscribed('delete:session:up-del');
		await streams.delete('up-del');
		await eventually(async () => (await received(up, 'up-del')).closed, 5000, 'upstream closed');
		expect(await redis.exists('available:session:up-del')).toBe(0);
	});

	it('an upstream delete closes our stream', async () => {
		const up = await upstream();
		const rec = recorder();
		await streams.create('ours-del', rec);
		await up.request('streams', { method: 'delete', args: ['ours-del'] });
		await eventually(() => rec.closed, 5000, 'ours closed');
		await eventually(async () => !(await streams.has('ours-del')), 5000, 'key removed by the owner');
	});
});

describe('info', () => {
	it('info written by upstream is read by ours, and the other way round', async () => {
		const up = await upstream();
		const clientInfo = { name: 'up-client', version: '1.0.0' };
		const caps = { sampling: {}, elicitation: {} };
		await up.request('info', { method: 'setClientInfo', args: ['x1', clientInfo] });
		await up.request('info', { method: 'setClientCapabilities', args: ['x1', caps] });
		expect(await info.getClientInfo('x1')).toEqual(clientInfo);
		expect(await info.getClientCapabilities('x1')).toEqual(caps);

		await info.setClientInfo('x2', { name: 'ours', version: '2' });
		await info.setClientCapabilities('x2', { roots: {} });
		expect(await up.request('info', { method: 'getClientInfo', args: ['x2'] })).toEqual({ name: 'ours', version: '2' });
		expect(await up.request('info', { method: 'getClientCapabilities', args: ['x2'] })).toEqual({ roots: {} });
	});

	it('log level in both stored forms', async () => {
		const up = await upstream();
		await up.request('info', { method: 'setLogLevel', args: ['lv1', 'notice'] });
		expect(await redis.get('tmcp:log_level:lv1')).toBe('"notice"');
		expect(await info.getLogLevel('lv1')).toBe('notice');
		await info.setLogLevel('lv2', 'critical');
		expect(await redis.get('tmcp:log_level:lv2')).toBe('critical');
		expect(await up.request('info', { method: 'getLogLevel', args: ['lv2'] })).toBe('critical');
	});

	it('subscriptions are shared; upstream delete clears ours, ours (upstreamCompatible) clears upstream’s', async () => {
		const up = await upstream();
		await up.request('info', { method: 'addSubscription', args: ['sub-up', 'file:///shared'] });
		await info.addSubscription('sub-ours', 'file:///shared');
		expect((await info.getSubscriptions('file:///shared')).sort()).toEqual(['sub-ours', 'sub-up']);
		expect((await up.request('info', { method: 'getSubscriptions', args: ['file:///shared'] })).sort()).toEqual([
			'sub-ours',
			'sub-up',
		]);
		await up.request('info', { method: 'delete', args: ['sub-ours'] });
		expect(await info.getSubscriptions('file:///shared')).toEqual(['sub-up']);

		const compat = new RedisInfoSessionManager(server.url, { upstreamCompatible: true });
		await compat.delete('sub-up');
		expect(await info.getSubscriptions('file:///shared')).toEqual([]);
		await compat.close();
	});
});
