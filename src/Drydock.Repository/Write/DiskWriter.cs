using System.Buffers;
using System.Globalization;
using Drydock.Repository.Format;

namespace Drydock.Repository.Write;

/// <summary>
/// Receives one disk's chunks. Submit each changed (or, for a full, every) chunk by its index with exactly
/// <see cref="LengthOf"/> bytes; chunks not submitted come from the parent's index at commit (incremental and
/// differential) or are an error (full). All-zero chunks may be submitted or marked with <see cref="MarkZero"/>.
/// </summary>
public sealed class DiskWriter
{
    private const byte Unset = 0;
    private const byte Pending = 1;
    private const byte Done = 2;

    private readonly PointWriter _session;
    private readonly byte[] _state;
    private readonly HashSet<long> _refresh;
    private long _zero;
    private long _submitted;
    private long _uploaded;
    private long _dedup;
    private long _bytesSubmitted;
    private long _bytesUploaded;

    internal DiskWriter(PointWriter session, DiskRequest request, int chunkSize, DiskManifest? parentDisk, DiskIndex? parentIndex, IReadOnlyList<long> refresh)
    {
        _session = session;
        Request = request;
        Index = new DiskIndex(request.VirtualSize, chunkSize);
        ParentDisk = parentDisk;
        ParentIndex = parentIndex;
        RefreshRequired = refresh;
        _refresh = [.. refresh];
        _state = new byte[Index.Count];
    }

    /// <summary>The disk request.</summary>
    public DiskRequest Request { get; }

    /// <summary>The disk name.</summary>
    public string Name => Request.Name;

    /// <summary>The chunk size of this disk's index.</summary>
    public int ChunkSize => Index.ChunkSize;

    /// <summary>The number of chunks.</summary>
    public long ChunkCount => Index.Count;

    /// <summary>Chunks the parent's index references that verify found bad: the caller must read and submit them
    /// even if they did not change, so the new point does not inherit damage (F32).</summary>
    public IReadOnlyList<long> RefreshRequired { get; }

    internal DiskIndex Index { get; }

    internal DiskManifest? ParentDisk { get; }

    internal DiskIndex? ParentIndex { get; }

    /// <summary>The byte count of a chunk (the last one may be short).</summary>
    /// <param name="chunkIndex">The chunk.</param>
    /// <returns>Its length.</returns>
    public int LengthOf(long chunkIndex) => Index.RangeOf(chunkIndex).Length;

    /// <summary>Whether the parent's index holds this chunk at the same length and in good standing (not quarantined), so
    /// its bytes can be the base of a partial re-read: the caller fetches them with <see cref="ReadParentChunkAsync"/>,
    /// overwrites only the ranges that changed since the parent, and submits the result.</summary>
    /// <param name="chunkIndex">The chunk.</param>
    /// <returns>Whether <see cref="ReadParentChunkAsync"/> can serve it.</returns>
    public bool HasParentChunk(long chunkIndex)
        => ParentIndex is { } parent
            && chunkIndex >= 0
            && chunkIndex < parent.Count
            && chunkIndex < Index.Count
            && parent.RangeOf(chunkIndex).Length == LengthOf(chunkIndex)
            && !_refresh.Contains(chunkIndex);

    /// <summary>Reads the parent point's copy of a chunk (zeros for a zero entry), authenticated and re-hashed like any
    /// restore read. A missing or damaged parent chunk fails with the repository's typed error naming the parent point.</summary>
    /// <param name="chunkIndex">A chunk for which <see cref="HasParentChunk"/> holds.</param>
    /// <param name="destination">Exactly <see cref="LengthOf"/> bytes.</param>
    /// <param name="cancellationToken">Cancels the read.</param>
    /// <returns>A task.</returns>
    public Task ReadParentChunkAsync(long chunkIndex, Memory<byte> destination, CancellationToken cancellationToken = default)
    {
        if (!HasParentChunk(chunkIndex))
        {
            throw new InvalidOperationException(string.Create(CultureInfo.InvariantCulture, $"chunk {chunkIndex} of disk {Name} has no usable copy in the parent point"));
        }

        var (offset, length) = Index.RangeOf(chunkIndex);
        if (destination.Length != length)
        {
            throw new ArgumentException(string.Create(CultureInfo.InvariantCulture, $"chunk {chunkIndex} of disk {Name} is {length} bytes; the destination is {destination.Length}"), nameof(destination));
        }

        var parentPoint = _session.Point with { Sequence = Request.ParentSequence ?? 0 };
        return _session.ReadCommittedChunkAsync(ParentIndex![chunkIndex], destination, new RepositoryLocationInfo(parentPoint, Name, offset, length), cancellationToken);
    }

    /// <summary>Queues a chunk. Returns once the bytes are copied (the caller may reuse its buffer) and the
    /// pipeline has room: this back-pressure is what bounds memory.</summary>
    /// <param name="chunkIndex">The chunk index.</param>
    /// <param name="data">Exactly <see cref="LengthOf"/> bytes.</param>
    /// <param name="cancellationToken">Cancels the wait.</param>
    /// <returns>A task.</returns>
    public async ValueTask WriteChunkAsync(long chunkIndex, ReadOnlyMemory<byte> data, CancellationToken cancellationToken = default)
    {
        Claim(chunkIndex, data.Length);
        var buffer = ArrayPool<byte>.Shared.Rent(Math.Max(1, data.Length));
        data.Span.CopyTo(buffer);
        await EnqueueClaimedAsync(chunkIndex, buffer, data.Length, cancellationToken);
    }

    /// <summary>Queues a chunk whose bytes are in an array rented from <see cref="ArrayPool{T}.Shared"/>, without copying
    /// them: the array belongs to the writer from the call on (it goes back to the pool when the chunk is stored, and on
    /// any failure, including one thrown by this call), so the caller must not touch it again. Same back-pressure as
    /// <see cref="WriteChunkAsync"/>.</summary>
    /// <param name="chunkIndex">The chunk index.</param>
    /// <param name="rented">The array, holding the chunk's bytes from index 0.</param>
    /// <param name="length">Exactly <see cref="LengthOf"/> bytes.</param>
    /// <param name="cancellationToken">Cancels the wait.</param>
    /// <returns>A task.</returns>
    public async ValueTask WriteRentedChunkAsync(long chunkIndex, byte[] rented, int length, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(rented);
        try
        {
            if ((uint)length > (uint)rented.Length)
            {
                throw new ArgumentOutOfRangeException(nameof(length), length, "longer than the array");
            }

            Claim(chunkIndex, length);
        }
        catch
        {
            ArrayPool<byte>.Shared.Return(rented);
            throw;
        }

        await EnqueueClaimedAsync(chunkIndex, rented, length, cancellationToken);
    }

    // Counts a claimed chunk and hands its pooled buffer to the pipeline, which returns it to the pool once stored; on a
    // failure to enqueue the buffer goes back here.
    private async ValueTask EnqueueClaimedAsync(long chunkIndex, byte[] buffer, int length, CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref _submitted);
        Interlocked.Add(ref _bytesSubmitted, length);
        try
        {
            await _session.EnqueueAsync(new ChunkWork(this, chunkIndex, buffer, length), cancellationToken);
        }
        catch
        {
            ArrayPool<byte>.Shared.Return(buffer);
            throw;
        }
    }

    /// <summary>Records a chunk as all zeros without sending its bytes (e.g. a hole or a zero extent).</summary>
    /// <param name="chunkIndex">The chunk index.</param>
    public void MarkZero(long chunkIndex)
    {
        Claim(chunkIndex, LengthOf(chunkIndex));
        Interlocked.Increment(ref _zero);
        Index[chunkIndex] = ChunkId.Zero;
        _state[chunkIndex] = Done;
    }

    /// <summary>Reads the whole disk from a stream, chunk by chunk (a full backup, or a restore-style copy).</summary>
    /// <param name="source">The disk's bytes from offset 0.</param>
    /// <param name="cancellationToken">Cancels the copy.</param>
    /// <returns>A task.</returns>
    public async Task WriteAllAsync(Stream source, CancellationToken cancellationToken = default)
    {
        var buffer = ArrayPool<byte>.Shared.Rent(ChunkSize);
        try
        {
            for (long i = 0; i < ChunkCount; i++)
            {
                var length = LengthOf(i);
                var read = 0;
                while (read < length)
                {
                    var n = await source.ReadAsync(buffer.AsMemory(read, length - read), cancellationToken);
                    if (n == 0)
                    {
                        throw new CommitRefusedException(
                            string.Create(CultureInfo.InvariantCulture, $"The source ended at byte {Index.RangeOf(i).Offset + read}; the disk is {Index.DiskSize} bytes"),
                            new RepositoryLocationInfo(_session.Point, Name, Index.RangeOf(i).Offset + read));
                    }

                    read += n;
                }

                await WriteChunkAsync(i, buffer.AsMemory(0, length), cancellationToken);
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    internal void Complete(ChunkWork work, ChunkId id, ChunkOutcome outcome, long bytesUploaded)
    {
        Index[work.Index] = id;
        switch (outcome)
        {
            case ChunkOutcome.Zero:
                Interlocked.Increment(ref _zero);
                break;
            case ChunkOutcome.Uploaded:
                Interlocked.Increment(ref _uploaded);
                Interlocked.Add(ref _bytesUploaded, bytesUploaded);
                RepositoryInstruments.ChunksUploaded.Add(1);
                RepositoryInstruments.BytesUploaded.Add(bytesUploaded);
                break;
            case ChunkOutcome.Deduplicated:
                Interlocked.Increment(ref _dedup);
                RepositoryInstruments.ChunksDeduplicated.Add(1);
                break;
            default:
                break;
        }

        Volatile.Write(ref _state[work.Index], Done);
    }

    /// <summary>Fills the entries not submitted from the parent, or fails naming the first gap.</summary>
    internal long FillFromParent(ISet<ChunkId> quarantined)
    {
        long inherited = 0;
        for (long i = 0; i < Index.Count; i++)
        {
            if (_state[i] == Done)
            {
                continue;
            }

            if (_state[i] == Pending)
            {
                throw new InvalidOperationException("a chunk is still pending after the pipeline drained");
            }

            var (offset, length) = Index.RangeOf(i);
            var where = new RepositoryLocationInfo(_session.Point, Name, offset, length);
            if (ParentIndex is null)
            {
                var end = i;
                while (end + 1 < Index.Count && _state[end + 1] == Unset)
                {
                    end++;
                }

                var last = Index.RangeOf(end);
                throw new CommitRefusedException(
                    string.Create(CultureInfo.InvariantCulture, $"A full backup must cover the whole disk: chunks {i}..{end} were never written"),
                    where with { Length = last.Offset + last.Length - offset });
            }

            if (i >= ParentIndex.Count || ParentIndex.RangeOf(i).Length != length)
            {
                throw new CommitRefusedException("The disk grew: chunks past the parent's end must be submitted (or marked zero)", where);
            }

            var id = ParentIndex[i];
            if (!id.IsZero && quarantined.Contains(id))
            {
                throw new CommitRefusedException($"The parent's chunk {id} is quarantined (verify found it bad) and was not resubmitted", where);
            }

            Index[i] = id;
            inherited++;
        }

        return inherited;
    }

    internal DiskManifest ToManifest(ChunkId indexId, long inherited) => new()
    {
        Name = Name,
        Identity = Request.Identity,
        VirtualSize = Request.VirtualSize,
        ChunkSize = ChunkSize,
        Level = Request.Level,
        ParentSequence = Request.Level == DiskBackupLevel.Full ? null : Request.ParentSequence,
        CheckpointName = Request.CheckpointName,
        CheckpointXml = Request.CheckpointXml,
        IndexId = indexId.ToString(),
        Stats = new DiskStats
        {
            Chunks = Index.Count,
            ZeroChunks = Interlocked.Read(ref _zero),
            SubmittedChunks = Interlocked.Read(ref _submitted),
            InheritedChunks = inherited,
            UploadedChunks = Interlocked.Read(ref _uploaded),
            DedupChunks = Interlocked.Read(ref _dedup),
            BytesSubmitted = Interlocked.Read(ref _bytesSubmitted),
            BytesUploaded = Interlocked.Read(ref _bytesUploaded),
        },
    };

    private void Claim(long chunkIndex, int length)
    {
        _session.ThrowIfUnusable();
        if (chunkIndex < 0 || chunkIndex >= Index.Count)
        {
            throw new ArgumentOutOfRangeException(nameof(chunkIndex), chunkIndex, string.Create(CultureInfo.InvariantCulture, $"disk {Name} has {Index.Count} chunks"));
        }

        var expected = LengthOf(chunkIndex);
        if (length != expected)
        {
            throw new ArgumentException(string.Create(CultureInfo.InvariantCulture, $"chunk {chunkIndex} of disk {Name} is {expected} bytes, got {length}"), nameof(length));
        }

        if (Interlocked.CompareExchange(ref _state[chunkIndex], Pending, Unset) != Unset)
        {
            throw new InvalidOperationException(string.Create(CultureInfo.InvariantCulture, $"chunk {chunkIndex} of disk {Name} was already written"));
        }
    }
}

/// <summary>What happened to a submitted chunk.</summary>
internal enum ChunkOutcome
{
    Zero,
    Uploaded,
    Deduplicated,
}
