"""DualPrompt (Wang et al., ECCV 2022): a shared G-prompt and task E-prompts as prefixes, keys matched at test time."""
