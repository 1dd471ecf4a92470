/** An answer the viewer's server gives on purpose: its HTTP status and a message naming what is wrong. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'HttpError';
  }
}
