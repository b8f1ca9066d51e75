using System.Security.Cryptography;
using System.Text.Json;
using Drydock.Hypervisor.Sim;
using Drydock.SiloHost.Cli;
using Xunit;

namespace Drydock.SiloHost.Tests.Cli;

/// <summary><c>drydock backup / points / restore</c> end to end on a simulated host and a filesystem repository.</summary>
public sealed class BackupCommandsTests : IAsyncLifetime
{
    private const long MiB = 1024 * 1024;
    private readonly string _root = Directory.CreateTempSubdirectory("drydock-cli-backup-").FullName;
    private SimFleet _fleet = null!;
    private SimDomain _domain = null!;
    private string _passFile = null!;

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private string Repo => new Uri(Path.Combine(_root, "repo")).AbsoluteUri;

    public async ValueTask InitializeAsync()
    {
        _fleet = new SimFleet(new SimFleetOptions { Directory = Path.Combine(_root, "sim"), Seed = 11 });
        var host = await _fleet.AddHostAsync("h1");
        var spec = new SimDomainSpec { Name = "vm1" };
        spec.Disks.Add(new SimDiskSpec("vda", 16 * MiB));
        spec.Disks.Add(new SimDiskSpec("vdb", 8 * MiB));
        _domain = await host.DefineAsync(spec, Ct);
        await _domain.StartAsync(cancellationToken: Ct);
        await _domain.RunWorkloadAsync(new SimWorkload(5, new SimWorkloadOptions { MaxBlocks = 128 }), 40, Ct);
        _passFile = Path.Combine(_root, "pass");
        await File.WriteAllTextAsync(_passFile, "cli backup passphrase\n", Ct);
        var (code, _, error) = await RunAsync("repo", "init", Repo, "--passphrase-file", _passFile, "--kdf-iterations", "1000");
        Assert.True(code == 0, error);
    }

    public async ValueTask DisposeAsync()
    {
        await _fleet.DisposeAsync();
        Directory.Delete(_root, recursive: true);
    }

    [Fact]
    public async Task Backup_auto_takes_a_full_then_an_incremental_and_restore_gives_back_each_point_byte_for_byte()
    {
        var first = await JsonAsync("backup", "vm1", "--hypervisor", "sim:h1");
        Assert.Equal(1, first.GetProperty("point").GetInt64());
        Assert.All(first.GetProperty("disks").EnumerateArray(), d => Assert.Equal("full", d.GetProperty("level").GetString()));
        Assert.All(first.GetProperty("disks").EnumerateArray(), d => Assert.Equal("NoPriorPoint", d.GetProperty("fullReason").GetProperty("code").GetString()));
        var atFirst = await HashDisksAsync();

        var changes = await _domain.RunWorkloadAsync(new SimWorkload(6, new SimWorkloadOptions { MaxBlocks = 4, ZeroWeight = 0, TrimWeight = 0 }), 3, Ct);
        var second = await JsonAsync("backup", "vm1", "--hypervisor", "sim:h1");
        Assert.Equal(2, second.GetProperty("point").GetInt64());
        var read = 0L;
        foreach (var disk in second.GetProperty("disks").EnumerateArray())
        {
            Assert.Equal("inc", disk.GetProperty("level").GetString());
            read += disk.GetProperty("bytesRead").GetInt64();
        }

        // Three writes of at most 16 KiB each touch at most two chunks each: far less than the 24 MiB of disk.
        Assert.InRange(read, 1, 6 * 4 * MiB);
        Assert.NotEmpty(changes);
        var atSecond = await HashDisksAsync();

        var points = await JsonAsync("points", "vm1");
        Assert.Equal([1L, 2L], points.EnumerateArray().Select(p => p.GetProperty("point").GetInt64()));

        foreach (var (point, expected) in new[] { (1, atFirst), (2, atSecond) })
        {
            var target = Path.Combine(_root, $"restore-{point}");
            var restore = await JsonAsync("restore", "vm1", "--point", point.ToString(System.Globalization.CultureInfo.InvariantCulture), "--to", target);
            Assert.Equal(point, restore.GetProperty("point").GetInt64());
            Assert.Equal("vm1", restore.GetProperty("domain").GetString());
            foreach (var (disk, hash) in expected)
            {
                Assert.Equal(hash, await HashFileAsync(Path.Combine(target, disk + ".raw")));
            }
        }

        // The text summary names the domain by its name (and id), not by the id alone.
        var (code, text, _) = await RunAsync("restore", "vm1", "--point", "1", "--to", Path.Combine(_root, "restore-text"), "--repo", Repo, "--passphrase-file", _passFile);
        Assert.Equal(0, code);
        Assert.StartsWith("point 1 of vm1 (", text, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Incrementals_patch_partly_changed_chunks_unless_patch_below_is_zero_and_both_restore_exact()
    {
        await JsonAsync("backup", "vm1", "--hypervisor", "sim:h1");
        var workload = new SimWorkloadOptions { MaxBlocks = 2, ZeroWeight = 0, TrimWeight = 0 };
        await _domain.RunWorkloadAsync(new SimWorkload(21, workload), 3, Ct);
        var patched = await JsonAsync("backup", "vm1", "--hypervisor", "sim:h1");
        var atPatched = await HashDisksAsync();
        await _domain.RunWorkloadAsync(new SimWorkload(22, workload), 3, Ct);
        var whole = await JsonAsync("backup", "vm1", "--hypervisor", "sim:h1", "--patch-below", "0");
        var atWhole = await HashDisksAsync();

        static (long Read, long Patched, long Chunks) Sum(JsonElement backup) => (
            backup.GetProperty("disks").EnumerateArray().Sum(d => d.GetProperty("bytesRead").GetInt64()),
            backup.GetProperty("disks").EnumerateArray().Sum(d => d.GetProperty("chunksPatched").GetInt64()),
            backup.GetProperty("disks").EnumerateArray().Sum(d => d.GetProperty("chunksRead").GetInt64()));
        var (patchedRead, patchedChunks, patchedTouched) = Sum(patched);
        var (wholeRead, wholePatched, wholeTouched) = Sum(whole);
        Assert.Equal(patchedTouched, patchedChunks);       // a few small writes: every touched chunk is patched
        Assert.True(patchedRead < patchedTouched * MiB, $"patched incremental read {patchedRead} bytes for {patchedTouched} chunks");
        Assert.Equal(0, wholePatched);
        Assert.True(wholeTouched > 0 && wholeRead > patchedRead, $"whole chunks: {wholeRead} bytes for {wholeTouched} chunks; patched: {patchedRead} for {patchedTouched}");

        foreach (var (point, expected) in new[] { (2, atPatched), (3, atWhole) })
        {
            var target = Path.Combine(_root, $"restore-{point}");
            await JsonAsync("restore", "vm1", "--point", point.ToString(System.Globalization.CultureInfo.InvariantCulture), "--to", target);
            foreach (var (disk, hash) in expected)
            {
                Assert.Equal(hash, await HashFileAsync(Path.Combine(target, disk + ".raw")));
            }
        }

        var (code, _, error) = await RunAsync("backup", "vm1", "--hypervisor", "sim:h1", "--patch-below", "1.5", "--repo", Repo, "--passphrase-file", _passFile);
        Assert.Equal(ExitCodes.Usage, code);
        Assert.Contains("--patch-below must be between 0 and 1", error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Restore_into_a_running_domain_is_refused_and_changed_only_into_a_stopped_one_rolls_it_back()
    {
        await JsonAsync("backup", "vm1", "--hypervisor", "sim:h1");
        var atBackup = await HashDisksAsync();
        await _domain.RunWorkloadAsync(new SimWorkload(8, new SimWorkloadOptions { MaxBlocks = 4 }), 5, Ct);

        var (code, _, error) = await RunAsync("restore", "vm1", "--into-domain", "--changed-only", "--hypervisor", "sim:h1", "--repo", Repo, "--passphrase-file", _passFile);
        Assert.NotEqual(0, code);
        Assert.Contains("running", error, StringComparison.OrdinalIgnoreCase);

        await _domain.DestroyAsync(Ct);
        var restore = await JsonAsync("restore", "vm1", "--into-domain", "--changed-only", "--hypervisor", "sim:h1");
        var written = restore.GetProperty("disks").EnumerateArray().Sum(d => d.GetProperty("chunksWritten").GetInt64() + d.GetProperty("chunksZeroed").GetInt64());
        var skipped = restore.GetProperty("disks").EnumerateArray().Sum(d => d.GetProperty("chunksSkipped").GetInt64());
        Assert.InRange(written, 1, 10);
        Assert.True(skipped > written, $"{skipped} chunks left alone, {written} written");
        Assert.Equal(atBackup, await HashDisksAsync());
    }

    [Theory]
    [InlineData("--hypervisor", "nope:x", "unknown driver 'nope'")]
    [InlineData("--hypervisor", "sim:elsewhere", "No simulated host 'elsewhere'")]
    public async Task A_bad_hypervisor_uri_names_what_is_wrong(string option, string value, string message)
    {
        var (code, _, error) = await RunAsync("backup", "vm1", option, value, "--repo", Repo, "--passphrase-file", _passFile);
        Assert.NotEqual(0, code);
        Assert.Contains(message, error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Restore_needs_exactly_one_destination()
    {
        var (code, _, error) = await RunAsync("restore", "vm1", "--repo", Repo, "--passphrase-file", _passFile);
        Assert.Equal(ExitCodes.Usage, code);
        Assert.Contains("exactly one of --to DIR or --into-domain", error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Backup_of_an_unknown_domain_fails_with_a_usage_error_naming_it()
    {
        var (code, _, error) = await RunAsync("backup", "no-such-vm", "--hypervisor", "sim:h1", "--repo", Repo, "--passphrase-file", _passFile);
        Assert.Equal(ExitCodes.Usage, code);
        Assert.Contains("no-such-vm", error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Points_of_an_unknown_domain_is_a_usage_error_naming_the_known_ones()
    {
        var (code, output, error) = await RunAsync("points", "nosuch", "--repo", Repo, "--passphrase-file", _passFile, "--json");
        Assert.Equal(ExitCodes.Usage, code);
        Assert.Empty(output);
        Assert.Contains("no domain 'nosuch' in repository", error, StringComparison.Ordinal);

        var backup = await JsonAsync("backup", "vm1", "--hypervisor", "sim:h1");
        (code, _, error) = await RunAsync("points", "nosuch", "--repo", Repo, "--passphrase-file", _passFile);
        Assert.Equal(ExitCodes.Usage, code);
        Assert.Contains($"known domains: vm1 ({backup.GetProperty("domainId").GetString()})", error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Points_of_a_known_domain_whose_points_are_all_pruned_is_an_empty_list()
    {
        var backup = await JsonAsync("backup", "vm1", "--hypervisor", "sim:h1");
        var domainId = backup.GetProperty("domainId").GetString()!;

        // What a prune leaves of a point: its tombstone, no manifest.
        var manifest = Directory.EnumerateFiles(Path.Combine(_root, "repo", "points"), "*", SearchOption.AllDirectories).Single();
        var tombstone = Path.Combine(_root, "repo", "tombstones", Path.GetRelativePath(Path.Combine(_root, "repo", "points"), manifest));
        Directory.CreateDirectory(Path.GetDirectoryName(tombstone)!);
        File.Move(manifest, tombstone);

        var points = await JsonAsync("points", domainId);
        Assert.Equal(0, points.GetArrayLength());
        var (code, output, _) = await RunAsync("points", domainId, "--repo", Repo, "--passphrase-file", _passFile);
        Assert.Equal(ExitCodes.Success, code);
        Assert.Contains("no points", output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Json_output_keeps_plus_signs_and_text_output_says_1_chunk()
    {
        await JsonAsync("backup", "vm1", "--hypervisor", "sim:h1");
        var (code, output, error) = await RunAsync("points", "vm1", "--repo", Repo, "--passphrase-file", _passFile, "--json");
        Assert.True(code == 0, error);
        Assert.Contains("+00:00", output, StringComparison.Ordinal);
        Assert.DoesNotContain("\\u002B", output, StringComparison.Ordinal);

        Assert.Equal("1 chunk", BackupCommands.Plural(1, "chunk"));
        Assert.Equal("0 chunks", BackupCommands.Plural(0, "chunk"));
    }

    private async Task<(int Code, string Output, string Error)> RunAsync(params string[] args)
    {
        using var output = new StringWriter();
        using var error = new StringWriter();
        var connectors = new HypervisorConnectors().Add(new SimConnector(_fleet));
        var code = await DrydockCli.RunAsync(args, output, error, () => connectors, Ct);
        return (code, output.ToString(), error.ToString());
    }

    private async Task<JsonElement> JsonAsync(params string[] args)
    {
        var (code, output, error) = await RunAsync([.. args, "--repo", Repo, "--passphrase-file", _passFile, "--json"]);
        Assert.True(code == 0, $"exit {code}: {error}");
        using var document = JsonDocument.Parse(output);
        return document.RootElement.Clone();
    }

    private async Task<Dictionary<string, string>> HashDisksAsync()
    {
        var hashes = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var disk in _domain.Disks)
        {
            var bytes = new byte[disk.Size];
            await disk.ReadAsync(0, bytes, Ct);
            hashes[disk.Target] = Convert.ToHexStringLower(SHA256.HashData(bytes));
        }

        return hashes;
    }

    private static async Task<string> HashFileAsync(string path)
    {
        await using var file = File.OpenRead(path);
        return Convert.ToHexStringLower(await SHA256.HashDataAsync(file, Ct));
    }
}
