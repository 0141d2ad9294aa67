/** A cluster's Dask dashboard inside JupyterLab: dask-labextension's panes pointed at it where that extension
 * is installed, else its status page in a main-area tab beside the current one (one tab per cluster). */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { MainAreaWidget } from '@jupyterlab/apputils';
import { IFrame } from '@jupyterlab/ui-components';

/** The tab's id for cluster `name` (the tests find the tab by it). */
export function dashboardTabId(name: string): string {
  return `cumulo-dashboard-${name}`;
}

/**
 * Open (or bring forward) the tab showing `url`, the dashboard's route on this Jupyter server.
 *
 * The page comes from this server's own origin (the route proxies it, behind the login), so the frame
 * may run its scripts with that origin: Bokeh's plots need their websocket, which carries the login cookie.
 */
export function openDashboardTab(app: JupyterFrontEnd, name: string, url: string): MainAreaWidget<IFrame> {
  const id = dashboardTabId(name);
  for (const widget of app.shell.widgets('main')) {
    if (widget.id === id) {
      const open = widget as MainAreaWidget<IFrame>;
      open.content.url = url;
      app.shell.activateById(id);
      return open;
    }
  }
  const frame = new IFrame({ sandbox: ['allow-scripts', 'allow-same-origin', 'allow-popups', 'allow-forms'] });
  frame.url = url;
  const widget = new MainAreaWidget({ content: frame });
  widget.id = id;
  widget.addClass('cumulo-lab-dashboard-tab');
  widget.title.label = `Dask: ${name}`;
  widget.title.caption = `The Dask dashboard of cluster ${name}`;
  widget.title.closable = true;
  // beside the notebook, as dask-labextension's panes sit: the plots move while the cell that feeds them runs
  app.shell.add(widget, 'main', { mode: 'split-right' });
  app.shell.activateById(id);
  return widget;
}

/** dask-labextension's sidebar (its widget id), where it is installed. */
export const DASK_SIDEBAR_ID = 'dask-dashboard-launcher';

/**
 * Point dask-labextension's panes at `url` (the route's status page); false where it is not installed.
 *
 * dask-labextension takes its dashboard address from the URL box of its sidebar and offers no command
 * to set it: this fills the box and presses Enter in it, as a user would, then shows its sidebar, whose
 * buttons (Task Stream, Progress, ...) then open panes through the route.
 */
export function pointDaskPanes(app: JupyterFrontEnd, url: string): boolean {
  const input = document.querySelector<HTMLInputElement>(`#${DASK_SIDEBAR_ID} .dask-URLInput input`);
  if (!input) {
    return false;
  }
  app.shell.activateById(DASK_SIDEBAR_ID);
  input.value = url;
  input.dispatchEvent(new KeyboardEvent('keydown', { key: 'Enter', keyCode: 13, bubbles: true, cancelable: true }));
  return true;
}
