import { describe, expect, it } from 'vitest';
import { workerProcessOf } from '../../lib/temporal/deadWorkers';

describe('workerProcessOf', () => {
  it("reads the host and pid of the SDKs' identity and of the GPU worker's", () => {
    expect(workerProcessOf('4242@build-host')).toEqual({ pid: 4242, host: 'build-host' });
    expect(workerProcessOf('4242@host@with@ats')).toEqual({ pid: 4242, host: 'host@with@ats' });
    expect(workerProcessOf('gpu-box:977:gpu0')).toEqual({ host: 'gpu-box', pid: 977 });
  });

  it('names no process for identities it cannot read', () => {
    for (const identity of [undefined, null, '', 'atelier-cli', 'x@host', 'host:abc:gpu0'])
      expect(workerProcessOf(identity)).toBeUndefined();
  });
});
