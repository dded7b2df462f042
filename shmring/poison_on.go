//go:build shmring_poison

package shmring

// poisonBuild: this build poisons released ring buffers (PoisonByte).
const poisonBuild = true
