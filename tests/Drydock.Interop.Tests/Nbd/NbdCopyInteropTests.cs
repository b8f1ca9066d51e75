using Xunit;
using Drydock.TestKit;

namespace Drydock.Interop.Tests.Nbd;

/// <summary><c>drydock nbd copy</c> against real servers: byte-identical, sparse, and loud on errors.</summary>
public sealed class NbdCopyInteropTests
{
    private const long MiB = 1024 * 1024;

    [Theory]
    [InlineData(ServerTransport.Unix, 1)]
    [InlineData(ServerTransport.Unix, 4)]
    [InlineData(ServerTransport.Tcp, 2)]
    public async Task Copy_of_a_qemu_nbd_export_is_byte_identical_to_the_image(ServerTransport transport, int connections)
    {
        var ct = TestContext.Current.CancellationToken;
        using var directory = TestDirectory.Create("copy-qemu-nbd");
        var image = await MixedImageAsync(directory, ct);
        await using var server = await QemuNbdServer.StartAsync(new QemuNbdOptions { ImagePath = image, ReadOnly = true, Transport = transport }, ct);
        var destination = directory.File("copy.raw");

        var result = await CliRunner.RunAsync("nbd", "copy", "--json", "--connections", connections.ToString(), server.Uri, destination);

        Assert.True(result.ExitCode == 0, result.Error);
        Assert.True(await NbdTools.CompareAsync(destination, ImageFormat.Raw, image, ImageFormat.Qcow2, strict: false, ct));
        using var json = result.Json();
        var root = json.RootElement;
        Assert.True(root.GetProperty("sparse").GetBoolean());
        Assert.Equal(connections, root.GetProperty("connections").GetInt32());

        // Only allocated data was read: 6 MiB of pattern data out of 48 MiB.
        Assert.Equal(6 * MiB, root.GetProperty("bytes-read").GetInt64());
        Assert.Equal(48 * MiB, root.GetProperty("export-size").GetInt64());

        // The copy is sparse: holes in the source are holes in the file.
        Assert.True(new FileInfo(destination).Length == 48 * MiB);
        Assert.True(await AllocatedBytesAsync(destination) <= 8 * MiB, "the destination should stay sparse");
    }

    [Fact]
    public async Task Copy_equals_nbdcopy_output_for_nbdkit_sparse_random_data()
    {
        var ct = TestContext.Current.CancellationToken;
        using var directory = TestDirectory.Create("copy-sparse-random");
        await using var server = await NbdkitServer.StartAsync(NbdkitOptions.SparseRandom(128 * MiB, percent: 10, seed: 3, runLength: 256 * 1024, randomContent: true), ct);
        var ours = directory.File("ours.raw");
        var theirs = directory.File("theirs.raw");

        var result = await CliRunner.RunAsync("nbd", "copy", server.Uri, ours);
        await NbdTools.CopyAsync(server.Uri, theirs, cancellationToken: ct);

        Assert.True(result.ExitCode == 0, result.Error);
        Assert.Equal(await File.ReadAllBytesAsync(theirs, ct), await File.ReadAllBytesAsync(ours, ct));
    }

    [Fact]
    public async Task Copy_through_a_one_millisecond_delay_is_complete_and_correct()
    {
        var ct = TestContext.Current.CancellationToken;
        using var directory = TestDirectory.Create("copy-delay");
        var image = await MixedImageAsync(directory, ct);
        await using var origin = await QemuNbdServer.StartAsync(new QemuNbdOptions { ImagePath = image, ReadOnly = true }, ct);
        await using var delayed = await NbdkitServer.StartAsync(
            NbdkitOptions.Nbd(origin.SocketPath!, origin.ExportName).WithDelay(read: TimeSpan.FromMilliseconds(1)), ct);
        var destination = directory.File("copy.raw");

        var result = await CliRunner.RunAsync("nbd", "copy", "--requests", "32", delayed.Uri, destination);

        Assert.True(result.ExitCode == 0, result.Error);
        Assert.True(await NbdTools.CompareAsync(destination, ImageFormat.Raw, image, ImageFormat.Qcow2, strict: false, ct));
    }

    [Fact]
    public async Task Copy_fails_naming_the_range_on_EIO_and_leaves_no_destination_file()
    {
        var ct = TestContext.Current.CancellationToken;
        using var directory = TestDirectory.Create("copy-eio");
        await using var server = await NbdkitServer.StartAsync(NbdkitOptions.Pattern(16 * MiB).WithErrorFilter(rate: 1.0, error: "EIO", operation: "pread"), ct);
        var destination = directory.File("copy.raw");

        var result = await CliRunner.RunAsync("nbd", "copy", server.Uri, destination);

        Assert.Equal(1, result.ExitCode);
        Assert.Matches(@"READ failed (in range \[\d+, \d+\)|at offset \d+): EIO", result.Error);
        Assert.False(File.Exists(destination), "a failed copy must not leave a file that looks complete");
        Assert.Empty(Directory.GetFiles(directory.Path, "*.partial"));
    }

    [Fact]
    public async Task Copy_to_null_reads_every_data_byte_and_writes_nothing()
    {
        var ct = TestContext.Current.CancellationToken;
        using var directory = TestDirectory.Create("copy-null");
        var image = await MixedImageAsync(directory, ct);
        await using var server = await QemuNbdServer.StartAsync(new QemuNbdOptions { ImagePath = image, ReadOnly = true }, ct);

        var result = await CliRunner.RunAsync("nbd", "copy", "--json", server.Uri, "null:");

        Assert.True(result.ExitCode == 0, result.Error);
        using var json = result.Json();
        Assert.Equal(6 * MiB, json.RootElement.GetProperty("bytes-read").GetInt64());
        Assert.Equal(0, json.RootElement.GetProperty("bytes-written").GetInt64());
    }

    [Fact]
    public async Task Copy_rejects_bad_arguments_with_a_usage_exit_code()
    {
        var bad = await CliRunner.RunAsync("nbd", "copy", "--connections", "0", "nbd+unix:///x?socket=/nonexistent", "null:");
        var badUri = await CliRunner.RunAsync("nbd", "copy", "http://example.com/disk", "null:");

        Assert.Equal(2, bad.ExitCode);
        Assert.Contains("--connections", bad.Error, StringComparison.Ordinal);
        Assert.Equal(2, badUri.ExitCode);
        Assert.Contains("scheme", badUri.Error, StringComparison.Ordinal);
    }

    /// <summary>
    /// 48 MiB qcow2: 4 MiB of pattern data at 0, 2 MiB at 30 MiB, allocated zeroes at 40 MiB, the rest unallocated.
    /// </summary>
    private static async Task<string> MixedImageAsync(TestDirectory directory, CancellationToken ct)
    {
        var image = await QemuImage.CreateQcow2Async(directory.File("disk.qcow2"), 48 * MiB, ct);
        await QemuImage.WritePatternAsync(image, ImageFormat.Qcow2, 0, 4 * MiB, 0x5a, ct);
        await QemuImage.WritePatternAsync(image, ImageFormat.Qcow2, 30 * MiB, 2 * MiB, 0xa5, ct);
        await QemuImage.WriteZeroesAsync(image, ImageFormat.Qcow2, 40 * MiB, 4 * MiB, unmap: false, ct);
        return image;
    }

    private static async Task<long> AllocatedBytesAsync(string path)
    {
        var result = await ProcessRunner.RunAsync("du", ["--block-size=1", path], cancellationToken: TestContext.Current.CancellationToken);
        return long.Parse(result.StandardOutput.Split('\t')[0], System.Globalization.CultureInfo.InvariantCulture);
    }
}
