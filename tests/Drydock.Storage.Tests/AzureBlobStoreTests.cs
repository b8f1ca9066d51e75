using Drydock.Storage.Azure;
using Drydock.TestKit.Azurite;
using Xunit;

namespace Drydock.Storage.Tests;

[CollectionDefinition(AzuriteCollection.Name)]
public sealed class AzuriteCollectionDefinition : AzuriteCollection;

/// <summary>The contract suite against a real Azurite process, with small multipart thresholds so block uploads are exercised.</summary>
[Collection(AzuriteCollection.Name)]
public sealed class AzureBlobStoreTests(AzuriteFixture azurite) : BlobStoreContract
{
    protected override int MultipartThreshold => 256 * 1024;

    protected override async Task<IBlobStore> CreateStoreAsync()
    {
        var store = new AzureBlobStore(
            AzureStorageAccount.Parse(azurite.ConnectionString),
            new AzureBlobStoreOptions
            {
                Container = azurite.NewContainerName("contract"),
                Prefix = "repo/sub",
                SingleUploadLimit = MultipartThreshold,
                BlockSize = 100 * 1024,
                MaxRetries = 2,
                RetryBaseDelay = TimeSpan.FromMilliseconds(10),
            });
        Assert.True(await store.CreateContainerIfNotExistsAsync(Ct));
        Assert.False(await store.CreateContainerIfNotExistsAsync(Ct));
        return store;
    }

    [Fact]
    public async Task Development_storage_connection_string_points_at_the_emulator_defaults()
    {
        var account = AzureStorageAccount.Parse("UseDevelopmentStorage=true");
        Assert.Equal(new Uri("http://127.0.0.1:10000/devstoreaccount1"), account.BlobEndpoint);
        Assert.Equal("devstoreaccount1", account.AccountName);
        Assert.True(account.UsesSharedKey);
        await Task.CompletedTask;
    }

    [Fact]
    public async Task A_wrong_key_is_refused_with_a_typed_error_and_a_request_id()
    {
        var wrong = azurite.ConnectionString.Replace(AzuriteFixture.AccountKey, Convert.ToBase64String(new byte[64]), StringComparison.Ordinal);
        using var store = new AzureBlobStore(AzureStorageAccount.Parse(wrong), new AzureBlobStoreOptions { Container = azurite.NewContainerName("denied"), MaxRetries = 0 });
        var e = await Assert.ThrowsAsync<BlobAccessDeniedException>(() => store.PutAsync("x", "y"u8.ToArray(), BlobCondition.CreateOnly, Ct));
        Assert.NotNull(e.RequestId);
        Assert.Contains("request id", e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain(AzuriteFixture.AccountKey, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_location_names_account_container_and_prefix_but_no_secret()
    {
        Assert.StartsWith("azure://devstoreaccount1/contract-", Store.Location, StringComparison.Ordinal);
        Assert.EndsWith("/repo/sub", Store.Location, StringComparison.Ordinal);
        Assert.DoesNotContain("AccountKey", Store.Location, StringComparison.Ordinal);
        await Task.CompletedTask;
    }
}
