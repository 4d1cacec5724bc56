// The studio's screens in tab order: one component each; adding a screen is one entry here.
import type { Component } from 'svelte';
import DatasetScreen from './DatasetScreen.svelte';
import ExportScreen from './ExportScreen.svelte';
import GenerateScreen from './GenerateScreen.svelte';
import LiveScreen from './LiveScreen.svelte';
import ModelScreen from './ModelScreen.svelte';
import SettingsScreen from './SettingsScreen.svelte';
import TrainScreen from './TrainScreen.svelte';
import type { StudioState } from '../state/studio.svelte';

export interface ScreenProps {
  studio: StudioState;
}

export const SCREENS = [
  { id: 'dataset', label: 'Dataset', component: DatasetScreen },
  { id: 'model', label: 'Model', component: ModelScreen },
  { id: 'train', label: 'Train', component: TrainScreen },
  { id: 'live', label: 'Live', component: LiveScreen },
  { id: 'generate', label: 'Generate', component: GenerateScreen },
  { id: 'export', label: 'Export', component: ExportScreen },
  { id: 'settings', label: 'Settings', component: SettingsScreen },
] as const satisfies readonly { id: string; label: string; component: Component<ScreenProps> }[];

export type ScreenId = (typeof SCREENS)[number]['id'];
