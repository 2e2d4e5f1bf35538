"""QEWD's simpler REST form: handlers by the path segment after the mount (/simple/<type>)."""


def info(messageObj, finished):
    finished({"type": messageObj["expressType"], "query": messageObj["query"]})


handlers = {"info": info}
