// The smallest end-to-end proof that a URL (and options) work: info written and read
// back, a stream created and a message delivered to it.
import { RedisInfoSessionManager, RedisStreamSessionManager } from '../../index.mjs';
import { eventually, recorder } from './redis.mjs';

/** Resolves to the client info read back; `name` records which URL wrote it. */
export async function roundTrip(url, options) {
	const info = new RedisInfoSessionManager(url, options);
	const streams = new RedisStreamSessionManager(url, options);
	try {
		await info.setClientInfo('t', { name: url, version: '1' });
		const rec = recorder();
		await streams.create('t', rec);
		await streams.send(['t'], 'round trip');
		await eventually(() => rec.chunks.includes('round trip'), 5000, 'delivery');
		return await info.getClientInfo('t');
	} finally {
		await streams.close();
		await info.close();
	}
}
