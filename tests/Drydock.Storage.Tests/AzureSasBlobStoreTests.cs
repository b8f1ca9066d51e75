using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using Drydock.Storage.Azure;
using Drydock.TestKit.Azurite;
using Xunit;

namespace Drydock.Storage.Tests;

/// <summary>
/// The contract suite against Azurite with SAS authentication only: the store is opened from a SAS URL the way
/// <c>drydock repo … https://ACCOUNT.blob.core.windows.net/CONTAINER/PREFIX?sv=…&amp;sig=…</c> opens it, with no account
/// key. The token is an account SAS signed here with Azurite's well-known key.
/// </summary>
[Collection(AzuriteCollection.Name)]
public sealed class AzureSasBlobStoreTests(AzuriteFixture azurite) : BlobStoreContract
{
    protected override int MultipartThreshold => 256 * 1024;

    protected override async Task<IBlobStore> CreateStoreAsync()
    {
        var container = azurite.NewContainerName("sas");
        using (var admin = new AzureBlobStore(AzureStorageAccount.Parse(azurite.ConnectionString), new AzureBlobStoreOptions { Container = container }))
        {
            Assert.True(await admin.CreateContainerIfNotExistsAsync(Ct));
        }

        var url = new Uri($"{azurite.BlobEndpoint}/{container}/repo?{AccountSas(TimeProvider.System.GetUtcNow().AddHours(1), "rwdlac")}");
        var (account, parsedContainer, prefix) = AzureStorageAccount.ParseSasUrl(url);
        Assert.False(account.UsesSharedKey);
        return new AzureBlobStore(account, new AzureBlobStoreOptions
        {
            Container = parsedContainer,
            Prefix = prefix,
            SingleUploadLimit = MultipartThreshold,
            BlockSize = 100 * 1024,
            MaxRetries = 2,
            RetryBaseDelay = TimeSpan.FromMilliseconds(10),
        });
    }

    [Fact]
    public async Task A_read_only_token_cannot_write_and_an_expired_one_is_refused()
    {
        await Store.PutAsync("present", "data"u8.ToArray(), BlobCondition.CreateOnly, Ct);
        var container = Store.Location.Split('/')[3];

        var readOnly = Open(container, AccountSas(TimeProvider.System.GetUtcNow().AddHours(1), "rl"));
        Assert.True(await readOnly.ExistsAsync("present", Ct));
        await Assert.ThrowsAsync<BlobAccessDeniedException>(() => readOnly.PutAsync("new", "x"u8.ToArray(), BlobCondition.CreateOnly, Ct));

        var expired = Open(container, AccountSas(TimeProvider.System.GetUtcNow().AddHours(-1), "rwdlac"));
        var e = await Assert.ThrowsAsync<BlobAccessDeniedException>(() => expired.ExistsAsync("present", Ct));
        Assert.DoesNotContain("sig=", e.Message, StringComparison.Ordinal);
    }

    private AzureBlobStore Open(string container, string sas)
    {
        var (account, parsedContainer, prefix) = AzureStorageAccount.ParseSasUrl(new Uri($"{azurite.BlobEndpoint}/{container}/repo?{sas}"));
        return new AzureBlobStore(account, new AzureBlobStoreOptions { Container = parsedContainer, Prefix = prefix, MaxRetries = 0 });
    }

    /// <summary>An account SAS (version 2019-12-12: blob service, all resource types) signed with Azurite's key.</summary>
    private static string AccountSas(DateTimeOffset expiry, string permissions)
    {
        const string Version = "2019-12-12";
        var se = expiry.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", CultureInfo.InvariantCulture);
        var toSign = $"{AzuriteFixture.AccountName}\n{permissions}\nb\nsco\n\n{se}\n\n\n{Version}\n";
        var signature = Convert.ToBase64String(HMACSHA256.HashData(Convert.FromBase64String(AzuriteFixture.AccountKey), Encoding.UTF8.GetBytes(toSign)));
        return $"sv={Version}&ss=b&srt=sco&sp={permissions}&se={Uri.EscapeDataString(se)}&sig={Uri.EscapeDataString(signature)}";
    }
}
