using System.Text.Json;
using Drydock.Repository;
using Drydock.Repository.Write;
using Drydock.SiloHost.Cli;
using Drydock.Storage;
using Drydock.Storage.FileSystem;
using Xunit;

namespace Drydock.SiloHost.Tests.Cli;

/// <summary><c>drydock repo ...</c> end to end on a filesystem repository.</summary>
public sealed class RepoCommandsTests : IDisposable
{
    private const string Passphrase = "cli test passphrase";
    private readonly string _root = Directory.CreateTempSubdirectory("drydock-cli-").FullName;
    private readonly string _passFile;

    public RepoCommandsTests()
    {
        _passFile = Path.Combine(_root, "pass");
        File.WriteAllText(_passFile, Passphrase + "\n");
    }

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private string Repo => new Uri(Path.Combine(_root, "repo")).AbsoluteUri;

    public void Dispose() => Directory.Delete(_root, recursive: true);

    private static async Task<(int Code, string Output, string Error)> RunAsync(params string[] args)
    {
        using var output = new StringWriter();
        using var error = new StringWriter();
        var code = await DrydockCli.RunAsync(args, output, error, Ct);
        return (code, output.ToString(), error.ToString());
    }

    private async Task<JsonElement> JsonAsync(params string[] args)
    {
        var (code, output, error) = await RunAsync([.. args, "--json", "--passphrase-file", _passFile]);
        Assert.True(code == 0, $"exit {code}: {error}");
        return JsonDocument.Parse(output).RootElement;
    }

    private async Task BackupAsync(Guid domain, byte[] image)
    {
        var store = new FileSystemBlobStore(new FileSystemBlobStoreOptions { Root = Path.Combine(_root, "repo") });
        using var repository = await BackupRepository.OpenAsync(store, Passphrase, cancellationToken: Ct);
        await using var session = await repository.BeginPointAsync(new PointRequest { DomainId = domain, DomainName = "vm", WriterId = "test" }, Ct);
        var disk = await session.AddDiskAsync(new DiskRequest { Name = "vda", Identity = "img", VirtualSize = image.Length }, Ct);
        await disk.WriteAllAsync(new MemoryStream(image), Ct);
        await session.CommitAsync(Ct);
    }

    [Fact]
    public async Task Init_info_verify_prune_and_gc_work_with_json_output()
    {
        var init = await JsonAsync("repo", "init", Repo, "--chunk-size", "65536", "--kdf-iterations", "1000");
        Assert.Equal("aes-256-gcm", init.GetProperty("encryption").GetString());
        var domain = Guid.NewGuid();
        var image = new byte[5 * 65536];
        new Random(1).NextBytes(image);
        await BackupAsync(domain, image);
        await BackupAsync(domain, image);

        var info = await JsonAsync("repo", "info", Repo);
        Assert.Equal(2, info.GetProperty("domains")[0].GetProperty("points").GetInt32());
        Assert.Equal(5, info.GetProperty("chunks").GetInt64());

        var verify = await JsonAsync("repo", "verify", Repo);
        Assert.True(verify.GetProperty("ok").GetBoolean());

        var prune = await JsonAsync("repo", "prune", Repo, "--keep-last", "1");
        Assert.Equal($"default/{domain:D}#1", prune.GetProperty("removed")[0].GetString());

        var gc = await JsonAsync("repo", "gc", Repo, "--dry-run");
        Assert.True(gc.GetProperty("dryRun").GetBoolean());
        Assert.Equal(0, gc.GetProperty("deletedChunks").GetInt32()); // inside the grace window
    }

    [Fact]
    public async Task Verify_exits_1_and_names_the_range_when_a_chunk_is_missing()
    {
        await JsonAsync("repo", "init", Repo, "--chunk-size", "65536", "--kdf-iterations", "1000");
        var image = new byte[3 * 65536];
        new Random(2).NextBytes(image);
        await BackupAsync(Guid.NewGuid(), image);
        var chunk = Directory.EnumerateFiles(Path.Combine(_root, "repo", "chunks"), "*", SearchOption.AllDirectories).First();
        File.Delete(chunk);

        var (code, output, _) = await RunAsync("repo", "verify", Repo, "--passphrase-file", _passFile);
        Assert.Equal(1, code);
        Assert.Contains("DAMAGE FOUND", output, StringComparison.Ordinal);
        Assert.Contains("chunk missing", output, StringComparison.Ordinal);
        Assert.Matches(@"vda bytes \d+\.\.\d+", output);
    }

    [Fact]
    public async Task A_wrong_or_missing_passphrase_is_a_clear_error_and_never_echoed()
    {
        await JsonAsync("repo", "init", Repo, "--chunk-size", "65536", "--kdf-iterations", "1000");
        var wrong = Path.Combine(_root, "wrong");
        await File.WriteAllTextAsync(wrong, "hunter2-wrong", Ct);
        var (code, output, error) = await RunAsync("repo", "info", Repo, "--passphrase-file", wrong);
        Assert.Equal(ExitCodes.Failure, code);
        Assert.Contains("passphrase does not unlock", error, StringComparison.Ordinal);
        Assert.DoesNotContain("hunter2", output + error, StringComparison.Ordinal);

        (code, _, error) = await RunAsync("repo", "info", Repo, "--passphrase-env", "DRYDOCK_TEST_UNSET_VARIABLE");
        Assert.Equal(ExitCodes.Usage, code);
        Assert.Contains("never on the command line", error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Unknown_repository_schemes_and_missing_azure_settings_are_explained()
    {
        var (code, _, error) = await RunAsync("repo", "info", "s3://bucket/x", "--passphrase-file", _passFile);
        Assert.Equal(ExitCodes.Usage, code);
        Assert.Contains("not supported", error, StringComparison.Ordinal);

        (code, _, error) = await RunAsync("repo", "info", "https://acct.blob.core.windows.net/c/p", "--passphrase-file", _passFile);
        Assert.Equal(ExitCodes.Usage, code);
        Assert.Contains("sig=", error, StringComparison.Ordinal);
        await Task.CompletedTask;
    }

    [Fact]
    public async Task Init_refuses_an_existing_repository()
    {
        await JsonAsync("repo", "init", Repo, "--chunk-size", "65536", "--kdf-iterations", "1000");
        var (code, _, error) = await RunAsync("repo", "init", Repo, "--passphrase-file", _passFile, "--kdf-iterations", "1000");
        Assert.Equal(ExitCodes.Failure, code);
        Assert.Contains("already holds a repository", error, StringComparison.Ordinal);
        Assert.True(await new FileSystemBlobStore(new FileSystemBlobStoreOptions { Root = Path.Combine(_root, "repo") }).ExistsAsync("drydock.repo", Ct));
    }

    [Fact]
    public async Task Prune_without_a_keep_option_is_a_usage_error_naming_the_options_and_removes_nothing()
    {
        // Retention always keeps the newest point, so no rule at all used to remove every other point.
        await JsonAsync("repo", "init", Repo, "--chunk-size", "65536", "--kdf-iterations", "1000");
        var domain = Guid.NewGuid();
        var image = new byte[2 * 65536];
        new Random(3).NextBytes(image);
        await BackupAsync(domain, image);
        await BackupAsync(domain, image);

        var (code, output, error) = await RunAsync("repo", "prune", Repo, "--passphrase-file", _passFile);
        Assert.Equal(ExitCodes.Usage, code);
        Assert.Empty(output);
        Assert.Contains("--keep-last, --keep-hourly, --keep-daily, --keep-weekly, --keep-monthly, --keep-yearly", error, StringComparison.Ordinal);
        Assert.Contains("--keep-last 1 keeps only the newest", error, StringComparison.Ordinal);
        (code, _, error) = await RunAsync("repo", "prune", Repo, "--keep-daily", "-1", "--passphrase-file", _passFile);
        Assert.Equal(ExitCodes.Usage, code);
        Assert.Contains("--keep-daily cannot be negative", error, StringComparison.Ordinal);
        Assert.Equal(2, (await JsonAsync("repo", "info", Repo)).GetProperty("domains")[0].GetProperty("points").GetInt32());

        var prune = await JsonAsync("repo", "prune", Repo, "--keep-last", "1");
        Assert.Equal($"default/{domain:D}#1", Assert.Single(prune.GetProperty("removed").EnumerateArray().ToList()).GetString());
    }

    [Fact]
    public async Task A_regular_file_or_a_host_in_a_file_url_is_a_usage_error_saying_what_is_wrong()
    {
        var file = Path.Combine(_root, "afile");
        await File.WriteAllTextAsync(file, "not a repository", Ct);
        var fileUrl = new Uri(file).AbsoluteUri;

        var (code, _, error) = await RunAsync("repo", "info", fileUrl, "--passphrase-file", _passFile);
        Assert.Equal(ExitCodes.Usage, code);
        Assert.Contains($"{file} is a file, not a repository directory", error, StringComparison.Ordinal);

        (code, _, error) = await RunAsync("repo", "init", fileUrl, "--passphrase-file", _passFile, "--kdf-iterations", "1000");
        Assert.Equal(ExitCodes.Usage, code);
        Assert.Contains($"{file} is a file, not a directory", error, StringComparison.Ordinal);
        Assert.DoesNotContain(".tmp", error, StringComparison.Ordinal);

        (code, _, error) = await RunAsync("repo", "init", fileUrl + "/sub", "--passphrase-file", _passFile, "--kdf-iterations", "1000");
        Assert.Equal(ExitCodes.Usage, code);
        Assert.Contains($"{file} is a file, not a directory", error, StringComparison.Ordinal);

        // file://relative/path names the host "relative", which .NET reads as the share \\relative\path.
        (code, _, error) = await RunAsync("repo", "info", "file://relative/path", "--passphrase-file", _passFile);
        Assert.Equal(ExitCodes.Usage, code);
        Assert.Contains("names the host 'relative'", error, StringComparison.Ordinal);
        Assert.Contains("file:///absolute/path", error, StringComparison.Ordinal);
        Assert.DoesNotContain("\\", error, StringComparison.Ordinal);

        (code, _, error) = await RunAsync("repo", "info", new Uri(Path.Combine(_root, "missing")).AbsoluteUri, "--passphrase-file", _passFile);
        Assert.Equal(ExitCodes.Usage, code);
        Assert.Contains("missing does not exist", error, StringComparison.Ordinal);

        await JsonAsync("repo", "init", "file://localhost" + Path.Combine(_root, "local"), "--chunk-size", "65536", "--kdf-iterations", "1000");
        Assert.True(File.Exists(Path.Combine(_root, "local", "drydock.repo")));
    }

    [Fact]
    public async Task Missing_passphrase_and_key_files_are_usage_errors_naming_the_file()
    {
        await JsonAsync("repo", "init", Repo, "--chunk-size", "65536", "--kdf-iterations", "1000");
        var missing = Path.Combine(_root, "nonexistent");
        var (code, _, error) = await RunAsync("repo", "info", Repo, "--passphrase-file", missing);
        Assert.Equal(ExitCodes.Usage, code);
        Assert.Contains($"passphrase file {missing} does not exist", error, StringComparison.Ordinal);
        Assert.DoesNotContain("Could not find", error, StringComparison.Ordinal);

        (code, _, error) = await RunAsync("repo", "info", Repo, "--passphrase-file", _passFile, "--key-file", missing);
        Assert.Equal(ExitCodes.Usage, code);
        Assert.Contains($"key file {missing} does not exist", error, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("150")]
    [InlineData("0")]
    [InlineData("-5")]
    public async Task Verify_sample_outside_0_to_100_is_a_usage_error(string sample)
    {
        // 0 used to check no chunk and report "all intact"; 150 leaked "options.SamplePercent ... Actual value was 150."
        await JsonAsync("repo", "init", Repo, "--chunk-size", "65536", "--kdf-iterations", "1000");
        var (code, output, error) = await RunAsync("repo", "verify", Repo, "--sample", sample, "--passphrase-file", _passFile);
        Assert.Equal(ExitCodes.Usage, code);
        Assert.Contains("--sample must be more than 0 and at most 100", error, StringComparison.Ordinal);
        Assert.DoesNotContain("intact", output, StringComparison.Ordinal);
        Assert.DoesNotContain("SamplePercent", error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Argument_errors_from_the_libraries_are_printed_without_the_parameter_name()
    {
        var (code, _, error) = await RunAsync("repo", "init", Repo, "--chunk-size", "1000", "--passphrase-file", _passFile, "--kdf-iterations", "1000");
        Assert.Equal(ExitCodes.Usage, code);
        Assert.DoesNotContain("(Parameter", error, StringComparison.Ordinal);

        await JsonAsync("repo", "init", Repo, "--chunk-size", "65536", "--kdf-iterations", "1000");
        (code, _, error) = await RunAsync("backup", "vm", "--hypervisor", "qemu:relative.sock", "--repo", Repo, "--passphrase-file", _passFile);
        Assert.Equal(ExitCodes.Usage, code);
        Assert.Contains("must name the monitor socket by an absolute path.", error, StringComparison.Ordinal);
        Assert.DoesNotContain("(Parameter", error, StringComparison.Ordinal);
    }

    [Fact]
    public void Error_text_drops_only_what_dotnet_appends_to_argument_exceptions()
    {
        Assert.Equal("bad size", ErrorText.Of(new ArgumentException("bad size", "init")));
        Assert.Equal("too big", ErrorText.Of(new ArgumentOutOfRangeException("options.SamplePercent", 150, "too big")));
        Assert.Equal("plain (Parameter 'x') stays", ErrorText.Of(new IOException("plain (Parameter 'x') stays")));
    }
}
