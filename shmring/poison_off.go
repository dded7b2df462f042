//go:build !shmring_poison

package shmring

// poisonBuild: released ring buffers are left as they are (build with the
// shmring_poison tag to poison them; see PoisonByte).
const poisonBuild = false
