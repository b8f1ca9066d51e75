namespace Drydock.Repository.Write;

/// <summary>One chunk queued for the workers: an array from the shared pool (a copy of the caller's bytes, or its own
/// buffer handed over), returned to the pool once the chunk is stored.</summary>
/// <param name="Disk">The disk.</param>
/// <param name="Index">The entry.</param>
/// <param name="Buffer">The rented buffer.</param>
/// <param name="Length">The byte count.</param>
internal readonly record struct ChunkWork(DiskWriter Disk, long Index, byte[] Buffer, int Length);
