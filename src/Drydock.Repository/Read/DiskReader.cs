using System.Buffers;
using System.Threading.Channels;
using Drydock.Repository.Format;

namespace Drydock.Repository.Read;

/// <summary>Reads one disk of a point, chunk by chunk, each fully checked (size, authentication, digest).
/// A missing or damaged chunk fails with an error naming the point, disk and byte range: never zeros.</summary>
public sealed class DiskReader
{
    private readonly BackupRepository _repository;

    internal DiskReader(BackupRepository repository, PointRef point, DiskManifest disk, DiskIndex index)
    {
        _repository = repository;
        Point = point;
        Disk = disk;
        Index = index;
    }

    /// <summary>The point.</summary>
    public PointRef Point { get; }

    /// <summary>The disk's manifest entry.</summary>
    public DiskManifest Disk { get; }

    /// <summary>The disk size.</summary>
    public long Size => Index.DiskSize;

    /// <summary>The chunk size.</summary>
    public int ChunkSize => Index.ChunkSize;

    /// <summary>The number of chunks.</summary>
    public long ChunkCount => Index.Count;

    internal DiskIndex Index { get; }

    /// <summary>A chunk's byte range.</summary>
    /// <param name="chunkIndex">The chunk.</param>
    /// <returns>Offset and length.</returns>
    public (long Offset, int Length) RangeOf(long chunkIndex) => Index.RangeOf(chunkIndex);

    /// <summary>Whether a chunk is all zeros (no read needed).</summary>
    /// <param name="chunkIndex">The chunk.</param>
    /// <returns>Whether it is a zero entry.</returns>
    public bool IsZero(long chunkIndex) => Index[chunkIndex].IsZero;

    /// <summary>The chunk ids (for comparing two points and restoring only what differs).</summary>
    /// <param name="chunkIndex">The chunk.</param>
    /// <returns>The id.</returns>
    public ChunkId IdOf(long chunkIndex) => Index[chunkIndex];

    /// <summary>Whether some bytes (e.g. read from a restore target) are exactly this chunk's content: their id, computed the
    /// way the repository computes it (keyed when encrypted), equals the index entry. No chunk is fetched.</summary>
    /// <param name="chunkIndex">The chunk.</param>
    /// <param name="data">The bytes; a length other than the chunk's never matches.</param>
    /// <returns>Whether the content is the same.</returns>
    public bool ContentMatches(long chunkIndex, ReadOnlySpan<byte> data)
    {
        var expected = Index[chunkIndex];
        if (data.Length != Index.RangeOf(chunkIndex).Length)
        {
            return false;
        }

        return expected.IsZero ? !data.ContainsAnyExcept((byte)0) : _repository.Codec.ComputeId(data) == expected;
    }

    /// <summary>Reads one chunk.</summary>
    /// <param name="chunkIndex">The chunk.</param>
    /// <param name="destination">Exactly the chunk's length.</param>
    /// <param name="cancellationToken">Cancels the read.</param>
    /// <returns>A task.</returns>
    public Task ReadChunkAsync(long chunkIndex, Memory<byte> destination, CancellationToken cancellationToken = default)
    {
        var (offset, length) = Index.RangeOf(chunkIndex);
        if (destination.Length != length)
        {
            throw new ArgumentException($"chunk {chunkIndex} is {length} bytes; the destination is {destination.Length}", nameof(destination));
        }

        return _repository.ReadChunkAsync(Index[chunkIndex], destination, new RepositoryLocationInfo(Point, Disk.Name, offset, length), cancellationToken);
    }

    /// <summary>Writes the whole disk to a stream in order, fetching and checking up to
    /// <see cref="RepositoryOptions.MaxConcurrentRequests"/> chunks ahead (memory stays bounded).</summary>
    /// <param name="destination">Where the disk goes.</param>
    /// <param name="cancellationToken">Cancels the copy.</param>
    /// <returns>A task.</returns>
    public async Task CopyToAsync(Stream destination, CancellationToken cancellationToken = default)
    {
        var window = Math.Max(_repository.Options.MaxParallelism, _repository.Options.MaxConcurrentRequests);
        var pending = Channel.CreateBounded<Task<(byte[] Buffer, int Length)>>(window);
        using var abort = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var producer = Task.Run(
            async () =>
            {
                try
                {
                    for (long i = 0; i < Index.Count; i++)
                    {
                        var chunk = i;
                        await pending.Writer.WriteAsync(FetchAsync(chunk, abort.Token), abort.Token);
                    }
                }
                finally
                {
                    pending.Writer.TryComplete();
                }
            },
            abort.Token);

        try
        {
            await foreach (var fetch in pending.Reader.ReadAllAsync(cancellationToken))
            {
                var (buffer, length) = await fetch;
                try
                {
                    await destination.WriteAsync(buffer.AsMemory(0, length), cancellationToken);
                }
                finally
                {
                    ArrayPool<byte>.Shared.Return(buffer);
                }
            }

            await producer;
        }
        catch
        {
            await abort.CancelAsync();
            while (pending.Reader.TryRead(out var left))
            {
                try
                {
                    ArrayPool<byte>.Shared.Return((await left).Buffer);
                }
                catch (Exception)
                {
                    // Already failing: the first error is what the caller sees.
                }
            }

            throw;
        }
    }

    private async Task<(byte[] Buffer, int Length)> FetchAsync(long chunkIndex, CancellationToken cancellationToken)
    {
        var length = Index.RangeOf(chunkIndex).Length;
        var buffer = ArrayPool<byte>.Shared.Rent(length);
        try
        {
            await Task.Yield();
            await ReadChunkAsync(chunkIndex, buffer.AsMemory(0, length), cancellationToken);
            return (buffer, length);
        }
        catch
        {
            ArrayPool<byte>.Shared.Return(buffer);
            throw;
        }
    }
}
