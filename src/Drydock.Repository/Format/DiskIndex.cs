using System.Buffers.Binary;
using System.Globalization;
using System.Numerics;
using System.Security.Cryptography;

namespace Drydock.Repository.Format;

/// <summary>
/// A per-disk index: one entry per fixed-size chunk covering the whole disk, in order (docs/FORMAT.md §Index).
/// Big-endian layout:
/// <code>
///  0  4  magic "DDIX"
///  4  2  version (1)
///  6  2  reserved (0)
///  8  4  chunk size (power of two, 64 KiB .. 64 MiB)
/// 12  8  disk size in bytes (1 .. 2^50)
/// 20  8  entry count = ceil(disk size / chunk size)
/// 28  .  entries of 44 bytes: offset u64, length u32, chunk id [32] (all-zero id = all-zero data)
///  .  32 SHA-256 of every preceding byte
/// </code>
/// Offsets are redundant on purpose: a reader checks each entry's offset and length, so gaps, overlaps and
/// misalignment are detected and named rather than silently shifting data.
/// </summary>
public sealed class DiskIndex
{
    /// <summary>Smallest chunk size.</summary>
    public const int MinChunkSize = 64 * 1024;

    /// <summary>Largest chunk size.</summary>
    public const int MaxChunkSize = 64 * 1024 * 1024;

    /// <summary>Largest disk (1 PiB).</summary>
    public const long MaxDiskSize = 1L << 50;

    /// <summary>Most entries in one index (16 Mi: 16 TiB at 1 MiB chunks, 64 TiB at 4 MiB).</summary>
    public const long MaxEntries = 16L * 1024 * 1024;

    /// <summary>Header size.</summary>
    public const int HeaderSize = 28;

    /// <summary>Entry size.</summary>
    public const int EntrySize = 44;

    private const uint Magic = 0x44444958; // "DDIX"

    private readonly ChunkId[] _ids;

    /// <summary>Creates an index of zero entries (all chunks all-zero) for a disk.</summary>
    /// <param name="diskSize">The disk size.</param>
    /// <param name="chunkSize">The chunk size.</param>
    public DiskIndex(long diskSize, int chunkSize)
    {
        var problem = CheckGeometry(diskSize, chunkSize);
        if (problem is not null)
        {
            throw new ArgumentException(problem);
        }

        DiskSize = diskSize;
        ChunkSize = chunkSize;
        _ids = new ChunkId[EntryCount(diskSize, chunkSize)];
    }

    /// <summary>The disk size.</summary>
    public long DiskSize { get; }

    /// <summary>The chunk size.</summary>
    public int ChunkSize { get; }

    /// <summary>The number of entries.</summary>
    public long Count => _ids.LongLength;

    /// <summary>The entries' ids.</summary>
    public ReadOnlySpan<ChunkId> Ids => _ids;

    /// <summary>An entry's id.</summary>
    /// <param name="index">The entry.</param>
    public ChunkId this[long index]
    {
        get => _ids[index];
        set => _ids[index] = value;
    }

    /// <summary>The number of entries of a disk.</summary>
    /// <param name="diskSize">The disk size.</param>
    /// <param name="chunkSize">The chunk size.</param>
    /// <returns>ceil(diskSize / chunkSize).</returns>
    public static long EntryCount(long diskSize, int chunkSize) => (diskSize + chunkSize - 1) / chunkSize;

    /// <summary>Why a geometry is invalid, or null.</summary>
    /// <param name="diskSize">The disk size.</param>
    /// <param name="chunkSize">The chunk size.</param>
    /// <returns>The problem, or null.</returns>
    public static string? CheckGeometry(long diskSize, long chunkSize)
    {
        if (chunkSize is < MinChunkSize or > MaxChunkSize || !BitOperations.IsPow2(chunkSize))
        {
            return string.Create(CultureInfo.InvariantCulture, $"chunk size {chunkSize} is not a power of two between {MinChunkSize} and {MaxChunkSize}");
        }

        if (diskSize is <= 0 or > MaxDiskSize)
        {
            return string.Create(CultureInfo.InvariantCulture, $"disk size {diskSize} is outside 1..{MaxDiskSize}");
        }

        var count = EntryCount(diskSize, (int)chunkSize);
        return count > MaxEntries
            ? string.Create(CultureInfo.InvariantCulture, $"{count} chunks exceed the cap of {MaxEntries} entries (use a larger chunk size)")
            : null;
    }

    /// <summary>The byte range of an entry.</summary>
    /// <param name="index">The entry.</param>
    /// <returns>Offset and length (the last entry may be short).</returns>
    public (long Offset, int Length) RangeOf(long index)
    {
        var offset = index * ChunkSize;
        return (offset, (int)Math.Min(ChunkSize, DiskSize - offset));
    }

    /// <summary>The serialised size of an index.</summary>
    /// <param name="entries">The entry count.</param>
    /// <returns>The byte count.</returns>
    public static long SerializedLength(long entries) => HeaderSize + (entries * EntrySize) + 32;

    /// <summary>Serialises the index.</summary>
    /// <returns>The bytes.</returns>
    public byte[] Serialize()
    {
        var bytes = new byte[SerializedLength(Count)];
        var span = bytes.AsSpan();
        BinaryPrimitives.WriteUInt32BigEndian(span, Magic);
        BinaryPrimitives.WriteUInt16BigEndian(span[4..], 1);
        BinaryPrimitives.WriteUInt32BigEndian(span[8..], (uint)ChunkSize);
        BinaryPrimitives.WriteUInt64BigEndian(span[12..], (ulong)DiskSize);
        BinaryPrimitives.WriteUInt64BigEndian(span[20..], (ulong)Count);
        var position = HeaderSize;
        for (long i = 0; i < Count; i++)
        {
            var (offset, length) = RangeOf(i);
            BinaryPrimitives.WriteUInt64BigEndian(span[position..], (ulong)offset);
            BinaryPrimitives.WriteUInt32BigEndian(span[(position + 8)..], (uint)length);
            _ids[i].WriteTo(span[(position + 12)..]);
            position += EntrySize;
        }

        SHA256.HashData(span[..position], span[position..]);
        return bytes;
    }

    /// <summary>Parses and validates an index against what the manifest says about the disk.</summary>
    /// <param name="bytes">The index plaintext.</param>
    /// <param name="expectedDiskSize">The manifest's virtual size.</param>
    /// <param name="expectedChunkSize">The manifest's chunk size.</param>
    /// <param name="where">Point and disk, for errors.</param>
    /// <returns>The index.</returns>
    /// <exception cref="IndexInvalidException">Anything is off; the message names the entry and its byte range.</exception>
    public static DiskIndex Parse(ReadOnlySpan<byte> bytes, long expectedDiskSize, int expectedChunkSize, RepositoryLocationInfo where)
    {
        if (bytes.Length < HeaderSize + 32)
        {
            throw new IndexInvalidException($"{bytes.Length} bytes is shorter than an empty index", where);
        }

        if (BinaryPrimitives.ReadUInt32BigEndian(bytes) != Magic)
        {
            throw new IndexInvalidException("bad magic", where);
        }

        var version = BinaryPrimitives.ReadUInt16BigEndian(bytes[4..]);
        if (version != 1)
        {
            throw new IndexInvalidException($"version {version} is unknown (this Drydock reads version 1)", where);
        }

        var chunkSize = BinaryPrimitives.ReadUInt32BigEndian(bytes[8..]);
        var diskSize = BinaryPrimitives.ReadUInt64BigEndian(bytes[12..]);
        var count = BinaryPrimitives.ReadUInt64BigEndian(bytes[20..]);

        // Sizes and counts are checked before anything is allocated.
        var geometry = CheckGeometry(diskSize > long.MaxValue ? -1 : (long)diskSize, chunkSize);
        if (geometry is not null)
        {
            throw new IndexInvalidException(geometry, where);
        }

        if ((long)diskSize != expectedDiskSize)
        {
            throw new IndexInvalidException(string.Create(CultureInfo.InvariantCulture, $"index covers {diskSize} bytes, the manifest says the disk has {expectedDiskSize}"), where);
        }

        if (chunkSize != expectedChunkSize)
        {
            throw new IndexInvalidException(string.Create(CultureInfo.InvariantCulture, $"index chunk size {chunkSize} differs from the manifest's {expectedChunkSize}"), where);
        }

        var expectedCount = EntryCount((long)diskSize, (int)chunkSize);
        if (count != (ulong)expectedCount)
        {
            throw new IndexInvalidException(string.Create(CultureInfo.InvariantCulture, $"{count} entries cannot cover {diskSize} bytes in {chunkSize}-byte chunks (needs {expectedCount})"), where);
        }

        var expectedLength = SerializedLength(expectedCount);
        if (bytes.Length != expectedLength)
        {
            throw new IndexInvalidException(
                bytes.Length < expectedLength
                    ? string.Create(CultureInfo.InvariantCulture, $"truncated: {bytes.Length} bytes, {count} entries need {expectedLength}")
                    : string.Create(CultureInfo.InvariantCulture, $"{bytes.Length - expectedLength} bytes of trailing garbage"),
                where);
        }

        var body = bytes[..^32];
        Span<byte> checksum = stackalloc byte[32];
        SHA256.HashData(body, checksum);
        if (!checksum.SequenceEqual(bytes[^32..]))
        {
            throw new IndexInvalidException("checksum mismatch", where);
        }

        var index = new DiskIndex((long)diskSize, (int)chunkSize);
        var position = HeaderSize;
        long covered = 0;
        for (long i = 0; i < expectedCount; i++)
        {
            var offset = BinaryPrimitives.ReadUInt64BigEndian(bytes[position..]);
            var length = BinaryPrimitives.ReadUInt32BigEndian(bytes[(position + 8)..]);
            var (expectedOffset, expectedLengthOfEntry) = index.RangeOf(i);
            var at = where with { Offset = (long)Math.Min(offset, long.MaxValue), Length = length };
            if (offset % chunkSize != 0)
            {
                throw new IndexInvalidException(string.Create(CultureInfo.InvariantCulture, $"entry {i} at offset {offset} is not aligned to the {chunkSize}-byte chunk size"), at);
            }

            if (offset > (ulong)expectedOffset)
            {
                throw new IndexInvalidException(string.Create(CultureInfo.InvariantCulture, $"gap: bytes {expectedOffset}..{offset - 1} are covered by no entry (entry {i})"), at);
            }

            if (offset < (ulong)expectedOffset)
            {
                throw new IndexInvalidException(string.Create(CultureInfo.InvariantCulture, $"overlap: entry {i} starts at {offset}, inside bytes already covered up to {expectedOffset - 1}"), at);
            }

            if (length != expectedLengthOfEntry)
            {
                throw new IndexInvalidException(string.Create(CultureInfo.InvariantCulture, $"entry {i} is {length} bytes long, expected {expectedLengthOfEntry}"), at);
            }

            covered += length;
            index._ids[i] = new ChunkId(bytes.Slice(position + 12, ChunkId.Size));
            position += EntrySize;
        }

        if (covered != (long)diskSize)
        {
            throw new IndexInvalidException(string.Create(CultureInfo.InvariantCulture, $"entries sum to {covered} bytes, the disk has {diskSize}"), where);
        }

        return index;
    }
}
