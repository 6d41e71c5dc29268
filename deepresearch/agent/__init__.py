"""The agent runtime: message/trajectory schema, ReAct loop, tools and policies.

    deepresearch agent run --world out/world --policy scripted --task "Write a report on ..."
"""
