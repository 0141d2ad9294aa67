/** The plugins' activate functions: build the model, the sidebar, the commands and the status item. */
import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, InputDialog, showErrorMessage } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookActions } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStatusBar } from '@jupyterlab/statusbar';
import { LabIcon } from '@jupyterlab/ui-components';

import { RestAPI } from './api';
import { openDashboardTab, pointDaskPanes } from './dashboardtab';
import { connectCode } from './format';
import { ComputeModel } from './model';
import { ComputePanel, PANEL_ID } from './panel';
import { SpendMeter } from './statusbar';
import { CommandIDs, IComputeModel } from './tokens';

const PLUGIN_ID = 'cumulo-jupyterlab:plugin';

const cloudIcon = new LabIcon({
  name: 'cumulo:cloud',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24"><path class="jp-icon3" fill="#616161" d="M19.4 10.04A7.49 7.49 0 0 0 12 4a7.5 7.5 0 0 0-6.65 4.04A6 6 0 0 0 6 20h13a5 5 0 0 0 .4-9.96zM14.5 13h-2v4h-2v-4h-2l3-3 3 3z"/></svg>'
});

/** Put `cumulo.connect(name=...)` into the active notebook (reusing an empty active cell). */
function insertConnectCell(tracker: INotebookTracker, name: string): boolean {
  const panel = tracker.currentWidget;
  if (!panel) {
    return false;
  }
  const notebook = panel.content;
  const active = notebook.activeCell;
  if (!active || active.model.type !== 'code' || active.model.sharedModel.getSource().trim() !== '') {
    NotebookActions.insertBelow(notebook);
  }
  notebook.activeCell!.model.sharedModel.setSource(connectCode(name));
  notebook.activate();
  return true;
}

export const computePlugin: JupyterFrontEndPlugin<ComputeModel> = {
  id: PLUGIN_ID,
  description: 'The Compute sidebar: every cumulo cluster you own, with a live spend meter.',
  autoStart: true,
  provides: IComputeModel,
  optional: [ISettingRegistry, INotebookTracker, ICommandPalette, ILayoutRestorer],
  activate: (
    app: JupyterFrontEnd,
    settings: ISettingRegistry | null,
    tracker: INotebookTracker | null,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null
  ): ComputeModel => {
    const model = new ComputeModel(new RestAPI());
    const insert = (name: string) => {
      if (!tracker || !insertConnectCell(tracker, name)) {
        void showErrorMessage('No notebook', 'Open a notebook first, then insert the connect cell.');
      }
    };
    const openDashboard = (name: string, url: string) => void app.commands.execute(CommandIDs.openDashboard, { name, url });
    const panel = new ComputePanel(model, insert, openDashboard);
    panel.title.icon = cloudIcon;
    app.shell.add(panel, 'left', { rank: 600 });
    restorer?.add(panel, PANEL_ID);

    app.commands.addCommand(CommandIDs.open, {
      label: 'Show Compute Clusters',
      execute: () => app.shell.activateById(PANEL_ID)
    });
    app.commands.addCommand(CommandIDs.newCluster, {
      label: 'New Compute Cluster…',
      execute: async () => {
        app.shell.activateById(PANEL_ID);
        await panel.openForm();
      }
    });
    app.commands.addCommand(CommandIDs.insertConnect, {
      label: 'Insert Connect Cell for a Cluster',
      caption: 'Insert cumulo.connect(name=...) into the active notebook',
      isEnabled: () => !!tracker?.currentWidget,
      execute: async args => {
        let name = args.name as string | undefined;
        if (!name) {
          const names = model.open.filter(r => r.state === 'running').map(r => r.name);
          if (!names.length) {
            await showErrorMessage('No running cluster', 'Launch one from the Compute sidebar first.');
            return;
          }
          const answer = await InputDialog.getItem({ title: 'Connect to which cluster?', items: names });
          if (!answer.button.accept || !answer.value) {
            return;
          }
          name = answer.value;
        }
        insert(name);
      }
    });
    app.commands.addCommand(CommandIDs.openDashboard, {
      label: args => `Open the Dask Dashboard of ${(args.name as string) || 'a Cluster'}`,
      execute: args => {
        if (!pointDaskPanes(app, args.url as string)) {
          openDashboardTab(app, args.name as string, args.url as string);
        }
      }
    });
    for (const command of [CommandIDs.open, CommandIDs.newCluster, CommandIDs.insertConnect]) {
      palette?.addItem({ command, category: 'Compute' });
    }

    if (settings) {
      void settings.load(PLUGIN_ID).then(loaded => {
        const apply = () => {
          model.refreshSeconds = loaded.get('refreshInterval').composite as number;
          model.confirmAbovePerHour = loaded.get('confirmAbovePerHour').composite as number;
        };
        apply();
        loaded.changed.connect(apply);
      }).catch(e => console.warn('cumulo: settings not loaded, using defaults', e));
    }
    model.startPolling();
    return model;
  }
};

export const statusPlugin: JupyterFrontEndPlugin<void> = {
  id: 'cumulo-jupyterlab:status',
  description: 'Status bar spend meter: running clusters, total $/h, spent today.',
  autoStart: true,
  requires: [IComputeModel],
  optional: [IStatusBar],
  activate: (app: JupyterFrontEnd, model: ComputeModel, statusBar: IStatusBar | null) => {
    if (!statusBar) {
      return;
    }
    const meter = new SpendMeter(model, () => app.shell.activateById(PANEL_ID));
    statusBar.registerStatusItem('cumulo-jupyterlab:meter', { item: meter, align: 'left', rank: 10 });
  }
};
