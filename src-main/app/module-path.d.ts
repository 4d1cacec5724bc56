// electron-vite's `?modulePath` import: the module is built as its own entry in out/main and the
// import yields its file path (for utilityProcess.fork). Declared here because tsconfig.node.json
// does not load electron-vite's node.d.ts.
declare module '*?modulePath' {
  const path: string;
  export default path;
}
