/** The kept chunks cannot be read as the manifest says: the write starts again as a full one. */
export class KeptChunksGone extends Error {
  override name = 'KeptChunksGone';
}
