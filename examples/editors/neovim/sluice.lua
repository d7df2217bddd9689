-- Starts `sluice lsp` for YAML buffers inside a sluice config repository
-- (a directory with sluice.yaml, else the Git root). Put this file in
-- ~/.config/nvim/plugin/ or require it from init.lua.
vim.api.nvim_create_autocmd("FileType", {
  pattern = "yaml",
  callback = function(args)
    local root = vim.fs.root(args.buf, { "sluice.yaml", ".git" })
    if not root then
      return
    end
    vim.lsp.start({
      name = "sluice",
      cmd = { "sluice", "lsp", root },
      root_dir = root,
    })
  end,
})
