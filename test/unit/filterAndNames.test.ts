import { describe, expect, it } from 'vitest';
import { parseFilterRows, rowSelector } from '../../lib/shared/filterRows';
import { defaultOutputs, namedOutputs } from '../../lib/run/outputNames';

describe('--filter-rows', () => {
  const picked = (spec: string, n = 12) => Array.from({ length: n }, (_, i) => i).filter(rowSelector(spec));
  it('reads ranges, open ends, single rows and mixes (half-open, by position)', () => {
    expect(picked('0:3')).toEqual([0, 1, 2]);
    expect(picked('10:')).toEqual([10, 11]);
    expect(picked(':2')).toEqual([0, 1]);
    expect(picked('0,5,10')).toEqual([0, 5, 10]);
    expect(picked('0:3,4:6')).toEqual([0, 1, 2, 4, 5]);
    expect(picked(' 1 , 3:4 ')).toEqual([1, 3]);
    expect(picked('0:100')).toHaveLength(12);
  });
  it.each([['abc'], ['1-3'], ['3:1'], ['2:2'], ['1,,2'], [''], [':'], ['-1'], ['1.5']])('rejects "%s" with a message naming it', (spec) => {
    expect(() => parseFilterRows(spec)).toThrow(/^--rows "/);
  });
});

describe('output names', () => {
  it('numbers default names by index, with _NN for several images', () => {
    expect(defaultOutputs(7, 1)).toEqual([{ path: '000007.png', format: 'png' }]);
    expect(defaultOutputs(7, 2).map((o) => o.path)).toEqual(['000007_00.png', '000007_01.png']);
  });
  it('keeps known extensions (and their format), appends .png otherwise, numbers several', () => {
    expect(namedOutputs('cats/a.jpg', 1)).toEqual([{ path: 'cats/a.jpg', format: 'jpeg' }]);
    expect(namedOutputs('b.JPEG', 1)).toEqual([{ path: 'b.JPEG', format: 'jpeg' }]);
    expect(namedOutputs('c.webp', 2)).toEqual([
      { path: 'c_00.webp', format: 'webp' },
      { path: 'c_01.webp', format: 'webp' },
    ]);
    expect(namedOutputs('d.gif', 1)).toEqual([{ path: 'd.gif.png', format: 'png' }]);
    expect(namedOutputs('e', 1)).toEqual([{ path: 'e.png', format: 'png' }]);
    expect(namedOutputs('./x/../f.png', 1)).toEqual([{ path: 'f.png', format: 'png' }]);
  });
  it.each([
    ['', /empty/],
    ['   ', /empty/],
    ['/etc/passwd', /absolute/],
    ['C:\\\\x.png', /absolute/],
    ['../up.png', /escapes/],
    ['a/../../up.png', /escapes/],
    ['..\\\\win.png', /escapes/],
    ['.atelier/ledger/x.png', /keeps for itself/],
    ['dir/', /folder/],
  ])('refuses %j', (name, reason) => {
    const result = namedOutputs(name, 1);
    expect('error' in result && result.error).toMatch(reason);
  });
});
