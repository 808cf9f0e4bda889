"""``ykt admin``: the service desk's and operators' commands, clients of the server's HTTP API."""
