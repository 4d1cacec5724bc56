// Runs before the page, isolated from it: exposes the typed API bridge as window.loraStudio and
// nothing else (no Node, no raw ipcRenderer).
import { contextBridge } from 'electron';
import type { BridgeGlobal, LoraStudioBridge } from '../api/contract';
import { invoke, on } from './ipc-renderer';

const BRIDGE_GLOBAL: BridgeGlobal = 'loraStudio';
const bridge: LoraStudioBridge = { invoke, on };

contextBridge.exposeInMainWorld(BRIDGE_GLOBAL, bridge);
