"""RLHF, the three-stage recipe of InstructGPT (Ouyang et al., arXiv 2203.02155), as a pipeline:

    1. sft   supervised fine-tuning on demonstrations                        (methods/sft.py)
    2. rm    a Bradley-Terry reward model on preference pairs:
             L = -E log sigma(r(x, y_w) - r(x, y_l)), the backbone initialised from the SFT policy
                                                                             (methods/rm.py)
    3. ppo   PPO against the *learned* reward, KL penalty to the SFT policy in the reward
             (methods/ppo.py; the runner swaps the task's reward for the reward model's score)

The policy of stage 3 starts from stage 1's (the RM stage trains only its own copy). Set a stage's
option with `--set ppo.kl_coef=0.02`, `--set rm.steps=200`. InstructGPT also mixes pre-training
gradients into PPO ("PPO-ptx"); that term is not part of this reference pipeline.
"""

PIPELINE = ["sft", "rm", "ppo"]
