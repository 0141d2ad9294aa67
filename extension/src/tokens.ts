/** The token other plugins (status bar, commands) use to share the one Compute model. */
import { Token } from '@lumino/coreutils';

import type { ComputeModel } from './model';

export const IComputeModel = new Token<ComputeModel>('cumulo-jupyterlab:model', 'The user\'s clusters and their cost, refreshed on a timer.');

export namespace CommandIDs {
  export const open = 'cumulo:open-compute';
  export const newCluster = 'cumulo:new-cluster';
  export const insertConnect = 'cumulo:insert-connect-cell';
  export const openDashboard = 'cumulo:open-dashboard';
}
