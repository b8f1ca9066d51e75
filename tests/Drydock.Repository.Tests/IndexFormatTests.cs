using System.Buffers.Binary;
using System.Security.Cryptography;
using Drydock.Repository.Format;
using Xunit;

namespace Drydock.Repository.Tests;

/// <summary>Index gaps, overlaps, misalignment, size mismatch, absurd sizes, checksum (FAULTS.md).</summary>
public sealed class IndexFormatTests
{
    private const int Chunk = 64 * 1024;
    private static readonly RepositoryLocationInfo Where = new(new PointRef("default", Guid.Empty, 7), "vdb");

    private static byte[] Valid(long diskSize = (3 * Chunk) + 100)
    {
        var index = new DiskIndex(diskSize, Chunk);
        for (long i = 0; i < index.Count; i++)
        {
            index[i] = new ChunkId(SHA256.HashData(BitConverter.GetBytes(i)));
        }

        return index.Serialize();
    }

    /// <summary>Edits an entry field then fixes the checksum, so only the structural check can catch it.</summary>
    private static byte[] Edit(byte[] bytes, Action<Span<byte>> edit)
    {
        edit(bytes);
        SHA256.HashData(bytes.AsSpan(0, bytes.Length - 32), bytes.AsSpan(bytes.Length - 32));
        return bytes;
    }

    private static string Reject(byte[] bytes, long diskSize = (3 * Chunk) + 100, int chunkSize = Chunk)
    {
        var e = Assert.Throws<IndexInvalidException>(() => DiskIndex.Parse(bytes, diskSize, chunkSize, Where));
        Assert.Equal("vdb", e.Disk);
        Assert.Equal(7, e.Point!.Value.Sequence);
        return e.Message;
    }

    private static int EntryAt(int i) => DiskIndex.HeaderSize + (i * DiskIndex.EntrySize);

    [Fact]
    public void A_valid_index_round_trips()
    {
        var parsed = DiskIndex.Parse(Valid(), (3 * Chunk) + 100, Chunk, Where);
        Assert.Equal(4, parsed.Count);
        Assert.Equal((3L * Chunk, 100), parsed.RangeOf(3));
    }

    [Fact]
    public void A_gap_is_named_with_its_byte_range()
    {
        var message = Reject(Edit(Valid(), b => BinaryPrimitives.WriteUInt64BigEndian(b[EntryAt(2)..], 3UL * Chunk)));
        Assert.Contains("gap", message, StringComparison.Ordinal);
        Assert.Contains("131072..196607", message, StringComparison.Ordinal);
    }

    [Fact]
    public void An_overlap_is_named()
        => Assert.Contains("overlap", Reject(Edit(Valid(), b => BinaryPrimitives.WriteUInt64BigEndian(b[EntryAt(2)..], Chunk))), StringComparison.Ordinal);

    [Fact]
    public void Misalignment_is_named()
        => Assert.Contains("not aligned", Reject(Edit(Valid(), b => BinaryPrimitives.WriteUInt64BigEndian(b[EntryAt(1)..], Chunk + 512))), StringComparison.Ordinal);

    [Fact]
    public void A_wrong_entry_length_is_named()
        => Assert.Contains("entry 3 is 99 bytes", Reject(Edit(Valid(), b => BinaryPrimitives.WriteUInt32BigEndian(b[(EntryAt(3) + 8)..], 99))), StringComparison.Ordinal);

    [Fact]
    public void A_size_different_from_the_manifest_is_refused()
        => Assert.Contains("the manifest says", Reject(Valid(), diskSize: 4 * Chunk), StringComparison.Ordinal);

    [Fact]
    public void A_count_that_cannot_cover_the_disk_is_refused_before_allocating()
        => Assert.Contains("cannot cover", Reject(Edit(Valid(), b => BinaryPrimitives.WriteUInt64BigEndian(b[20..], 1UL << 40))), StringComparison.Ordinal);

    [Fact]
    public void An_absurd_disk_size_is_refused()
    {
        var bytes = Edit(Valid(), b => BinaryPrimitives.WriteUInt64BigEndian(b[12..], ulong.MaxValue));
        Assert.Contains("disk size", Reject(bytes), StringComparison.Ordinal);
    }

    [Fact]
    public void A_chunk_size_that_is_not_a_power_of_two_is_refused()
        => Assert.Contains("power of two", Reject(Edit(Valid(), b => BinaryPrimitives.WriteUInt32BigEndian(b[8..], Chunk + 1))), StringComparison.Ordinal);

    [Fact]
    public void A_bad_checksum_is_refused()
    {
        var bytes = Valid();
        bytes[EntryAt(1) + 20] ^= 1;
        Assert.Contains("checksum", Reject(bytes), StringComparison.Ordinal);
    }

    [Fact]
    public void Truncation_and_trailing_garbage_are_refused()
    {
        var bytes = Valid();
        Assert.Contains("truncated", Reject(bytes[..^10]), StringComparison.Ordinal);
        Assert.Contains("trailing garbage", Reject([.. bytes, 0]), StringComparison.Ordinal);
    }

    [Fact]
    public void An_unknown_index_version_is_refused()
        => Assert.Contains("version 2", Reject(Edit(Valid(), b => BinaryPrimitives.WriteUInt16BigEndian(b[4..], 2))), StringComparison.Ordinal);
}

/// <summary>The compression decision of the object codec.</summary>
public sealed class CompressionDecisionTests
{
    private static byte[] Seal(byte[] plain)
    {
        using var keys = Drydock.Repository.Crypto.RepositoryKeys.Derive(new byte[32], Guid.NewGuid(), "k");
        var codec = new ObjectCodec(Guid.NewGuid(), keys, encrypt: true, Drydock.Repository.Compression.CompressionAlgorithm.Zstd, 1);
        return codec.Seal(ObjectType.Chunk, new byte[32], plain);
    }

    [Fact]
    public void Random_chunks_are_stored_raw()
    {
        var plain = RandomNumberGenerator.GetBytes(1 << 20);
        Assert.Equal(0, Seal(plain)[6]);
    }

    [Fact]
    public void A_chunk_that_is_random_only_at_its_start_is_still_compressed()
    {
        var plain = new byte[1 << 20];
        RandomNumberGenerator.Fill(plain.AsSpan(0, 300 * 1024));
        var sealedObject = Seal(plain);
        Assert.NotEqual(0, sealedObject[6]);
        Assert.True(sealedObject.Length < 400 * 1024);
    }
}
