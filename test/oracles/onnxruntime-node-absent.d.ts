// Type stand-in for onnxruntime-node where npm left it out (an optional
// dependency of this workspace: see package.json here). tsconfig.check.json
// maps 'onnxruntime-node' to the installed package first, to this file only
// when it is absent; the code that uses it skips at run time without it.
declare const ort: any; // eslint-disable-line @typescript-eslint/no-explicit-any
export = ort;
