"""Tools of Model Context Protocol servers, called as steps like any Python tool.

`config` reads the servers from `STEPSTREAM_MCP_CONFIG`, `client` holds one session per
server in a process, `source` turns a server's tools into stepstream `Tool`s, `listing`
(`python -m tasks.mcp_tools.listing`) asks every server for its tools in a process of
its own, and `catalog` keeps what the listings found, for the web.
"""
