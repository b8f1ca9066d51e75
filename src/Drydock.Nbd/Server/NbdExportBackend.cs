namespace Drydock.Nbd.Server;

/// <summary>
/// Where an export's bytes live. The server (and code acting as the guest, through <see cref="NbdExport"/>)
/// calls it with ranges already checked against <see cref="Size"/>. Implementations must be safe for
/// concurrent calls: requests on one connection, and on every connection to the export, run in parallel.
/// </summary>
public abstract class NbdExportBackend : IAsyncDisposable
{
    /// <summary>Size of the export in bytes.</summary>
    public abstract ulong Size { get; }

    /// <summary>Whether the storage itself cannot be written (for example a file opened read-only).</summary>
    public virtual bool IsReadOnly => false;

    /// <summary>
    /// Whether WRITE_ZEROES is faster than writing zeroes for this backend (NBD_CMD_FLAG_FAST_ZERO).
    /// When false, a fast-zero request fails with ENOTSUP without touching the data.
    /// </summary>
    /// <param name="noHole">Whether the range must stay allocated (NBD_CMD_FLAG_NO_HOLE).</param>
    /// <returns>True when zeroing is cheap.</returns>
    public virtual bool CanZeroFast(bool noHole) => false;

    /// <summary>Reads <paramref name="destination"/>.Length bytes at <paramref name="offset"/>; holes read as zeroes.</summary>
    /// <param name="offset">Offset in the export.</param>
    /// <param name="destination">Filled completely on success.</param>
    /// <param name="cancellationToken">Cancels the read.</param>
    /// <returns>A task that completes when the data is in <paramref name="destination"/>.</returns>
    public abstract ValueTask ReadAsync(ulong offset, Memory<byte> destination, CancellationToken cancellationToken = default);

    /// <summary>Writes <paramref name="data"/> at <paramref name="offset"/>.</summary>
    /// <param name="offset">Offset in the export.</param>
    /// <param name="data">The bytes.</param>
    /// <param name="fua">Persist before completing.</param>
    /// <param name="cancellationToken">Cancels the write.</param>
    /// <returns>A task that completes when the write is done.</returns>
    public abstract ValueTask WriteAsync(ulong offset, ReadOnlyMemory<byte> data, bool fua, CancellationToken cancellationToken = default);

    /// <summary>Makes a range read as zeroes, deallocating it unless <paramref name="noHole"/> is set.</summary>
    /// <param name="offset">Offset in the export.</param>
    /// <param name="length">Length in bytes.</param>
    /// <param name="noHole">Keep the range allocated.</param>
    /// <param name="fua">Persist before completing.</param>
    /// <param name="cancellationToken">Cancels the request.</param>
    /// <returns>A task that completes when the range reads as zeroes.</returns>
    public abstract ValueTask WriteZeroesAsync(ulong offset, ulong length, bool noHole, bool fua, CancellationToken cancellationToken = default);

    /// <summary>Discards a range if the backend can (a hint: afterwards its content is unspecified).</summary>
    /// <param name="offset">Offset in the export.</param>
    /// <param name="length">Length in bytes.</param>
    /// <param name="fua">Persist before completing.</param>
    /// <param name="cancellationToken">Cancels the request.</param>
    /// <returns>A task that completes when done.</returns>
    public abstract ValueTask TrimAsync(ulong offset, ulong length, bool fua, CancellationToken cancellationToken = default);

    /// <summary>Makes every completed write persistent.</summary>
    /// <param name="cancellationToken">Cancels the request.</param>
    /// <returns>A task that completes when written data is persistent.</returns>
    public abstract ValueTask FlushAsync(CancellationToken cancellationToken = default);

    /// <summary>Prefetches a range (NBD_CMD_CACHE). The default does nothing.</summary>
    /// <param name="offset">Offset in the export.</param>
    /// <param name="length">Length in bytes.</param>
    /// <param name="cancellationToken">Cancels the request.</param>
    /// <returns>A task that completes when the hint was taken.</returns>
    public virtual ValueTask CacheAsync(ulong offset, ulong length, CancellationToken cancellationToken = default) => ValueTask.CompletedTask;

    /// <summary>
    /// Describes the allocation of a range for <c>base:allocation</c>: consecutive extents starting at
    /// <paramref name="offset"/>, flagged <see cref="Protocol.NbdAllocationFlags.Hole"/> |
    /// <see cref="Protocol.NbdAllocationFlags.Zero"/> for holes and 0 for data.
    /// </summary>
    /// <param name="offset">Start of the range.</param>
    /// <param name="length">Length of the range (non-zero).</param>
    /// <param name="maxExtents">Most extents to return; fewer extents may cover only a prefix of the range.</param>
    /// <param name="cancellationToken">Cancels the query.</param>
    /// <returns>At least one extent; together they cover the range or a prefix of it, never more.</returns>
    public abstract ValueTask<IReadOnlyList<NbdExtent>> GetAllocationAsync(ulong offset, ulong length, int maxExtents, CancellationToken cancellationToken = default);

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        await DisposeAsyncCore();
        GC.SuppressFinalize(this);
    }

    /// <summary>Releases the backend's resources.</summary>
    /// <returns>A task that completes when they are released.</returns>
    protected virtual ValueTask DisposeAsyncCore() => ValueTask.CompletedTask;

    /// <summary>Throws when a range is not inside the export: backends are called with checked ranges only.</summary>
    /// <param name="offset">Start of the range.</param>
    /// <param name="length">Length of the range.</param>
    /// <exception cref="ArgumentOutOfRangeException">The range passes the end of the export.</exception>
    protected void CheckRange(ulong offset, ulong length)
    {
        if (offset > Size || length > Size - offset)
        {
            throw new ArgumentOutOfRangeException(nameof(offset), $"range [{offset}, +{length}) passes the export end {Size}");
        }
    }
}
