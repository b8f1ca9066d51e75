namespace Drydock.Repository.Write;

/// <summary>One chunk queued for the workers: a pooled copy of the caller's bytes.</summary>
/// <param name="Disk">The disk.</param>
/// <param name="Index">The entry.</param>
/// <param name="Buffer">The rented buffer.</param>
/// <param name="Length">The byte count.</param>
internal readonly record struct ChunkWork(DiskWriter Disk, long Index, byte[] Buffer, int Length);
