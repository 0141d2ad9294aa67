/** cumulo's JupyterLab extension: only registers the plugins (see plugins.ts). */
import { computePlugin, statusPlugin } from './plugins';

export { IComputeModel } from './tokens';
export default [computePlugin, statusPlugin];
