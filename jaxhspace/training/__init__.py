"""Training loops (DDPM on SynthFaces; the Asyrp editor lives in ``jaxhspace.editing``) and their resumable
checkpoints."""
