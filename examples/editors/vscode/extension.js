// Starts `sluice lsp` for the workspace folder and attaches it to YAML files.
const vscode = require("vscode");
const { LanguageClient } = require("vscode-languageclient/node");

let client;

function activate() {
  const folder = vscode.workspace.workspaceFolders?.[0];
  if (!folder) return;
  const command = vscode.workspace.getConfiguration("sluice").get("path") || "sluice";
  const server = { command, args: ["lsp", folder.uri.fsPath] };
  client = new LanguageClient(
    "sluice",
    "sluice",
    { run: server, debug: server },
    { documentSelector: [{ scheme: "file", language: "yaml" }] },
  );
  return client.start();
}

function deactivate() {
  return client?.stop();
}

module.exports = { activate, deactivate };
