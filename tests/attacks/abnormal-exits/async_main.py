# attack: async def main, whose coroutine would never run
# stopped-by: refused before anything runs
# expect: 422 missing-main


async def main():
    return 1
