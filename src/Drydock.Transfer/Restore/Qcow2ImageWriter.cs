using System.Buffers.Binary;
using Microsoft.Win32.SafeHandles;

namespace Drydock.Transfer.Restore;

/// <summary>
/// Writes a new qcow2 image (version 3, no backing file, 16-bit refcounts) in one pass, without qemu: each data run is
/// given the next free host clusters as it arrives (any order, concurrently) and written there, through O_DIRECT when
/// aligned. <see cref="Complete"/> then appends the L2 tables, the L1 table and the refcount blocks and table after the
/// last data cluster and writes the header last, so the file is a valid image only once it is complete. Layout as
/// QEMU's docs/interop/qcow2.txt defines it: every used cluster has refcount 1, so L1 and L2 entries carry the
/// COPIED flag and <c>qemu-img check</c> finds neither errors nor leaks.
/// </summary>
internal sealed class Qcow2ImageWriter : IRestoreTarget
{
    /// <summary>The cluster size the restore uses (QEMU's default): the restore's sparse segment.</summary>
    public const int DefaultClusterBits = 16;

    private const uint Magic = 0x514649fb; // "QFI\xfb"
    private const int HeaderLength = 104;
    private const int RefcountOrder = 4; // 16-bit refcounts
    private const ulong Copied = 1UL << 63; // refcount exactly one

    private readonly SafeFileHandle _handle;
    private readonly FileTarget _data;
    private readonly long _virtualSize;
    private readonly int _clusterBits;
    private readonly int _clusterSize;
    private readonly int _l2Entries;
    private readonly long _refcountsPerBlock;
    private readonly ulong[]?[] _l2Tables;
    private long _nextCluster = 1; // cluster 0 holds the header
    private int _completed;

    /// <summary>Creates the writer over an empty file.</summary>
    /// <param name="handle">The new file, opened for writing (buffered).</param>
    /// <param name="direct">The same file opened with O_DIRECT, or null.</param>
    /// <param name="path">The file's path, for messages.</param>
    /// <param name="virtualSize">The disk's size.</param>
    /// <param name="clusterBits">log2 of the cluster size (9 to 21).</param>
    public Qcow2ImageWriter(SafeFileHandle handle, SafeFileHandle? direct, string path, long virtualSize, int clusterBits = DefaultClusterBits)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(virtualSize);
        ArgumentOutOfRangeException.ThrowIfLessThan(clusterBits, 9);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(clusterBits, 21);
        _handle = handle;
        _data = new FileTarget(handle, direct, path);
        _virtualSize = virtualSize;
        _clusterBits = clusterBits;
        _clusterSize = 1 << clusterBits;
        _l2Entries = _clusterSize / sizeof(ulong);
        _refcountsPerBlock = (long)_clusterSize * 8 / (1 << RefcountOrder);
        var guestClusters = (virtualSize + _clusterSize - 1) >> clusterBits;
        _l2Tables = new ulong[]?[(guestClusters + _l2Entries - 1) / _l2Entries];
    }

    /// <inheritdoc/>
    public bool WantsAlignedBuffers => true;

    /// <inheritdoc/>
    public Task ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken) =>
        throw new NotSupportedException("a new qcow2 image is never read back");

    /// <inheritdoc/>
    public Task ZeroAsync(long offset, Memory<byte> scratch, CancellationToken cancellationToken) =>
        throw new NotSupportedException("a new qcow2 image already reads as zeroes");

    /// <summary>
    /// Writes a run of guest data: it must start on a cluster boundary and span whole clusters, except that it may end
    /// at the end of the disk. Each guest cluster may be written once.
    /// </summary>
    /// <param name="offset">The guest offset.</param>
    /// <param name="data">The bytes.</param>
    /// <param name="cancellationToken">Checked before writing.</param>
    /// <returns>A completed task (the write is synchronous).</returns>
    public Task WriteAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        var end = offset + data.Length;
        if ((offset & (_clusterSize - 1)) != 0 || ((data.Length & (_clusterSize - 1)) != 0 && end != _virtualSize) || end > _virtualSize || data.IsEmpty)
        {
            throw new ArgumentOutOfRangeException(nameof(offset), $"a qcow2 write must cover whole {_clusterSize}-byte clusters inside the disk: [{offset}, {end}) of {_virtualSize}");
        }

        var clusters = (data.Length + _clusterSize - 1) >> _clusterBits;
        var host = Interlocked.Add(ref _nextCluster, clusters) - clusters;
        var guest = offset >> _clusterBits;
        for (var k = 0; k < clusters; k++)
        {
            var table = TableOf(guest + k);
            var index = (int)((guest + k) % _l2Entries);
            if (Interlocked.CompareExchange(ref table[index], ((ulong)(host + k) << _clusterBits) | Copied, 0) != 0)
            {
                throw new InvalidOperationException($"guest cluster {guest + k} of the qcow2 image was written twice");
            }
        }

        return _data.WriteAsync(host << _clusterBits, data, cancellationToken);
    }

    /// <summary>Writes the L2 tables, the L1 table, the refcount structures and then the header.</summary>
    /// <exception cref="IOException">Writing failed.</exception>
    public void Complete()
    {
        if (Interlocked.Exchange(ref _completed, 1) != 0)
        {
            throw new InvalidOperationException("the qcow2 image is already complete");
        }

        var dataEnd = Interlocked.Read(ref _nextCluster);
        var l2Count = _l2Tables.Count(t => t is not null);
        var l1Clusters = Math.Max(1, ClustersFor((long)_l2Tables.Length * sizeof(ulong)));
        var (blocks, tableClusters) = RefcountLayout(dataEnd + l2Count + l1Clusters);
        var l2Start = dataEnd;
        var l1Start = l2Start + l2Count;
        var blocksStart = l1Start + l1Clusters;
        var tableStart = blocksStart + blocks;
        var total = tableStart + tableClusters;

        var cluster = new byte[_clusterSize];
        var l1 = new byte[l1Clusters * _clusterSize];
        var next = l2Start;
        for (var i = 0; i < _l2Tables.Length; i++)
        {
            if (_l2Tables[i] is not { } table)
            {
                continue;
            }

            for (var e = 0; e < table.Length; e++)
            {
                BinaryPrimitives.WriteUInt64BigEndian(cluster.AsSpan(e * sizeof(ulong)), table[e]);
            }

            WriteCluster(next, cluster);
            BinaryPrimitives.WriteUInt64BigEndian(l1.AsSpan(i * sizeof(ulong)), ((ulong)next << _clusterBits) | Copied);
            next++;
        }

        RandomAccess.Write(_handle, l1, l1Start << _clusterBits);

        // Refcount blocks: every cluster below `total` is used exactly once.
        var refcountTable = new byte[tableClusters * _clusterSize];
        for (long b = 0; b < blocks; b++)
        {
            Array.Clear(cluster);
            var first = b * _refcountsPerBlock;
            var used = Math.Min(_refcountsPerBlock, total - first);
            for (var e = 0; e < used; e++)
            {
                BinaryPrimitives.WriteUInt16BigEndian(cluster.AsSpan(e * sizeof(ushort)), 1);
            }

            WriteCluster(blocksStart + b, cluster);
            BinaryPrimitives.WriteUInt64BigEndian(refcountTable.AsSpan((int)b * sizeof(ulong)), (ulong)(blocksStart + b) << _clusterBits);
        }

        RandomAccess.Write(_handle, refcountTable, tableStart << _clusterBits);

        Array.Clear(cluster);
        WriteHeader(cluster, l1Start << _clusterBits, tableStart << _clusterBits, tableClusters);
        WriteCluster(0, cluster);
    }

    /// <summary>
    /// How many refcount blocks and refcount-table clusters cover <paramref name="used"/> clusters plus themselves.
    /// </summary>
    /// <param name="used">Clusters used before the refcount structures.</param>
    /// <returns>Blocks and table clusters.</returns>
    private (long Blocks, long TableClusters) RefcountLayout(long used)
    {
        long blocks = 0, tableClusters = 0;
        while (true)
        {
            var total = used + blocks + tableClusters;
            var needBlocks = (total + _refcountsPerBlock - 1) / _refcountsPerBlock;
            var needTable = Math.Max(1, ClustersFor(needBlocks * sizeof(ulong)));
            if (needBlocks == blocks && needTable == tableClusters)
            {
                return (blocks, tableClusters);
            }

            (blocks, tableClusters) = (needBlocks, needTable);
        }
    }

    private long ClustersFor(long bytes) => (bytes + _clusterSize - 1) >> _clusterBits;

    private ulong[] TableOf(long guestCluster)
    {
        var index = guestCluster / _l2Entries;
        return Volatile.Read(ref _l2Tables[index])
            ?? Interlocked.CompareExchange(ref _l2Tables[index], new ulong[_l2Entries], null)
            ?? _l2Tables[index]!;
    }

    private void WriteCluster(long index, byte[] cluster) => RandomAccess.Write(_handle, cluster, index << _clusterBits);

    private void WriteHeader(Span<byte> header, long l1Offset, long refcountTableOffset, long refcountTableClusters)
    {
        BinaryPrimitives.WriteUInt32BigEndian(header, Magic);
        BinaryPrimitives.WriteUInt32BigEndian(header[4..], 3);                       // version
        BinaryPrimitives.WriteUInt32BigEndian(header[20..], (uint)_clusterBits);
        BinaryPrimitives.WriteUInt64BigEndian(header[24..], (ulong)_virtualSize);
        BinaryPrimitives.WriteUInt32BigEndian(header[36..], (uint)_l2Tables.Length);   // l1_size
        BinaryPrimitives.WriteUInt64BigEndian(header[40..], (ulong)l1Offset);
        BinaryPrimitives.WriteUInt64BigEndian(header[48..], (ulong)refcountTableOffset);
        BinaryPrimitives.WriteUInt32BigEndian(header[56..], (uint)refcountTableClusters);
        BinaryPrimitives.WriteUInt32BigEndian(header[96..], RefcountOrder);
        BinaryPrimitives.WriteUInt32BigEndian(header[100..], HeaderLength);

        // Backing file, encryption, snapshots, feature bits: none (zero). The header extension area that follows is
        // just its end marker (eight zero bytes).
    }
}
