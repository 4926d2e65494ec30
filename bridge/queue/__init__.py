"""Jobs in Redis: keys, Lua scripts, the job codec, enqueue, claim and finish, the worker loop.

The only package that imports arq."""
