import { findTemporalCli } from '../../lib/temporal/temporalCli';

/** The project's pinned Temporal CLI (installed by `npm install`); tests never download one. */
export function temporalCliPath(): string {
  return findTemporalCli();
}
