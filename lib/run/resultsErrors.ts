/** The kept chunks cannot be read as the manifest says: the write starts again as a full one. */
export class KeptChunksGone extends Error {
  override name = 'KeptChunksGone';
}

/** Records loaded by their pointer alone could not be read whole when a new base needed them: the write starts again as a full one. */
export class RecordsGone extends Error {
  override name = 'RecordsGone';
}
